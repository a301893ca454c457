"""What the generator wrote into a directory: ``.jettracks-generate.json``.

:func:`jettracks.generate.generate_dataset` records, per file-name stem (``prefix``
or the format), the parameters that decide the files' content and the names of
the files it wrote. A later call compares its own parameters with the record:

- same parameters, every file present: **reused** (nothing is written);
- same parameters, some files absent (interrupted run, deleted files, or more
  files asked for with the same per-file parameters): **completed** (only the
  absent ones are generated);
- no record but exactly the wanted ``{stem}_NNNN.root`` files (made before records
  existed): **reused** when the first and last equal a regeneration with these
  parameters (compared array by array), and recorded;
- different parameters (seed, events per file, fewer files, process, any
  option) or other ``{stem}_*.root`` files the generator did not record: **refused**
  with one line (:class:`GenerateError`) unless ``overwrite=True``, which
  **replaces**: it deletes only the files the record lists (and the
  ``{stem}_NNNN.root`` names it is about to write), then generates.

Records of other stems in the same directory are left alone. The record is
written before the files (atomically), so an interrupted generation is
completed by the next call with the same parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io.atomic import write_text_atomic

__all__ = ["SIDECAR", "GenerateError", "Plan", "plan_generation", "write_record"]

#: File name of the record in the output directory.
SIDECAR = ".jettracks-generate.json"
_VERSION = 1


class GenerateError(ValueError):
    """The output directory holds files of other generation parameters (one line)."""


class Plan:
    """What :func:`plan_generation` decided for one stem.

    Attributes:
        action: ``generated``, ``reused``, ``completed`` or ``replaced``.
        todo: file indices to generate.
        delete: paths to delete before generating (files of the previous record).
        message: one line saying what happens, for the caller to print.
    """

    def __init__(self, action: str, todo: list[int], delete: list[Path], message: str) -> None:
        self.action, self.todo, self.delete, self.message = action, todo, delete, message


def _read(out: Path) -> dict[str, Any]:
    path = out / SIDECAR
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise GenerateError(
            f"{path}: unreadable generation record ({err.__class__.__name__}); "
            "delete it or pass overwrite=True"
        ) from None
    return data.get("datasets", {}) if isinstance(data, dict) else {}


def write_record(out: Path, stem: str, params: dict[str, Any], files: list[str]) -> None:
    """Record ``params`` and ``files`` for ``stem`` (atomic; other stems kept)."""
    datasets = _read(out)
    datasets[stem] = {"params": params, "files": files}
    text = json.dumps({"version": _VERSION, "datasets": datasets}, indent=2, sort_keys=True) + "\n"
    write_text_atomic(out / SIDECAR, text)


def _describe(params: dict[str, Any]) -> str:
    return (
        f"{params['format']} {params['process']}, {params['n_files']} files x "
        f"{params['events_per_file']} events, seed {params['seed']}"
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    out = []
    for key in ("format", "process", "n_files", "events_per_file", "seed"):
        if old.get(key) != new.get(key):
            out.append(f"{key} {old.get(key)} -> {new.get(key)}")
    if old.get("container", "ttree") != new.get("container", "ttree"):  # recorded only when not ttree
        out.append(f"container {old.get('container', 'ttree')} -> {new.get('container', 'ttree')}")
    for group in ("model", "writer"):
        a, b = old.get("options", {}).get(group, {}), new.get("options", {}).get(group, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{key} {a.get(key)} -> {b.get(key)}")
    return ", ".join(out) or "record format"


def _same_per_file(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Parameters that decide each file's content (all but the number of files)."""
    strip = {k: v for k, v in old.items() if k != "n_files"}
    return strip == {k: v for k, v in new.items() if k != "n_files"}


def plan_generation(
    out: Path,
    stem: str,
    params: dict[str, Any],
    paths: list[Path],
    *,
    overwrite: bool,
    adopt: Callable[[list[Path]], bool] | None = None,
) -> Plan:
    """Compare ``params`` with the directory's record for ``stem``; see the module docstring.

    ``adopt(files)``: for files made before records existed (no record, exactly the
    wanted names on disk): True when they are these parameters' files (the caller
    regenerates the first and last and compares), then they are reused and recorded.

    Raises:
        GenerateError: different parameters or unrecorded ``{stem}_NNNN.root`` files,
            without ``overwrite``.
    """
    record = _read(out).get(stem)
    pattern = re.compile(rf"{re.escape(stem)}_\d{{4}}\.root")
    on_disk = sorted(p for p in out.iterdir() if pattern.fullmatch(p.name)) if out.is_dir() else []
    wanted = {p.name for p in paths}
    n = len(paths)
    where = f"{out}: {stem}_*.root"

    if record is None:
        if not on_disk:
            return Plan("generated", list(range(n)), [], f"generated {n} files {where} ({_describe(params)})")
        if not overwrite:
            if adopt is not None and {p.name for p in on_disk} == wanted and adopt(sorted(on_disk)):
                return Plan("reused", [], [], f"reused {n} files {where} made before generation records: "
                                              f"first and last equal a regeneration ({_describe(params)})")
            raise GenerateError(
                f"{where}: {len(on_disk)} file(s) exist with no generation record ({SIDECAR}) "
                "and differ from these parameters' files (or are not all there); pass overwrite=True "
                "(runner generate --overwrite) to replace them, or choose another directory"
            )
        # Unknown provenance: replace only the names this call writes.
        delete = [p for p in on_disk if p.name in wanted]
        return Plan("replaced", list(range(n)), delete,
                    f"replaced {len(delete)} unrecorded file(s) and generated {n} files {where} "
                    f"({_describe(params)})")

    old = record.get("params", {})
    written = [out / name for name in record.get("files", [])]
    if overwrite:
        delete = sorted({*written, *(p for p in on_disk if p.name in wanted)})
        return Plan("replaced", list(range(n)), [p for p in delete if p.exists()],
                    f"replaced {len([p for p in delete if p.exists()])} files of the previous generation "
                    f"and generated {n} files {where} ({_describe(params)})")
    if old == params or (_same_per_file(old, params) and n >= int(old.get("n_files", 0))):
        todo = [i for i, p in enumerate(paths) if not p.exists()]
        if not todo:
            return Plan("reused", [], [], f"reused {n} files {where}: same generation parameters "
                                          f"({_describe(params)})")
        return Plan("completed", todo, [],
                    f"reused {n - len(todo)} and generated {len(todo)} files {where} ({_describe(params)})")
    raise GenerateError(
        f"{where} were generated with other parameters ({_differences(old, params)}); "
        "pass overwrite=True (runner generate --overwrite) to replace them, or choose another directory"
    )
