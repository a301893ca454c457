"""Small input files made from the real PFNano file: good copies with their own UUID, and faults.

One writer for every test that needs a PFNano-layout file with some branches
dropped or no entries (needs uproot and awkward, unlike :mod:`.data`).
"""

from __future__ import annotations

from pathlib import Path

#: The branches the PFNano reader reads (and the event ids).
PF_BRANCHES = [
    "run", "luminosityBlock", "event", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass",
    "Jet_hadronFlavour", "Jet_partonFlavour", "PFCands_pt", "PFCands_eta", "PFCands_phi",
    "PFCands_charge", "PFCands_d0", "PFCands_d0Err", "PFCands_dz",
]

__all__ = ["PF_BRANCHES", "copy_with_new_uuid", "generated_pfnano", "write_pfnano_like"]

#: Generator options of the small synthetic PFNano inputs of the service tests (fast to make and read).
SMALL_GENERATION = {"pileup_candidates": 20, "compression": "zlib", "links": False}


def generated_pfnano(out: Path, *, n_files: int, events_per_file: int, seed: int) -> list[str]:
    """Paths (as strings) of small generated PFNano files in ``out`` (:data:`SMALL_GENERATION`)."""
    from jettracks.generate import generate_dataset

    return [str(p) for p in generate_dataset(out, format="pfnano", n_files=n_files, events_per_file=events_per_file,
                                             seed=seed, **SMALL_GENERATION)]


def write_pfnano_like(path: Path, source: Path, *, entry_stop: int | None = None, drop=(), event_offset: int = 0) -> Path:
    """Rewrite ``source``'s PFNano branches into ``path`` (a new file, so a new file UUID).

    Args:
        path: the file to write.
        source: a PFNano file (the real ``pfnano.root``).
        entry_stop: keep only the first entries (0: an empty tree).
        drop: branch names left out (e.g. ``("PFCands_d0Err",)``: a file missing a branch).
        event_offset: added to the event numbers (a file with other events).
    """
    import awkward as ak
    import uproot

    arrs = uproot.open(source)["Events"].arrays(PF_BRANCHES, entry_stop=entry_stop)
    jet = {k[4:]: arrs[k] for k in arrs.fields if k.startswith("Jet_") and k not in drop}
    pf = {k[8:]: arrs[k] for k in arrs.fields if k.startswith("PFCands_") and k not in drop}
    data = {"run": arrs["run"], "luminosityBlock": arrs["luminosityBlock"], "event": arrs["event"] + event_offset,
            "Jet": ak.zip(jet), "PFCands": ak.zip(pf)}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f["Events"].extend(data)
    return path


def copy_with_new_uuid(src: Path, dst: Path) -> Path:
    """A byte copy of a ROOT file under a fresh file UUID (a plain copy is the same file:
    a run processes files of one UUID once)."""
    import uuid

    import uproot

    old = uproot.open(src).file.fUUID
    dst.write_bytes(src.read_bytes().replace(bytes(old), uuid.uuid4().bytes))
    return dst
