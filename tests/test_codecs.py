"""uproot's decompressors swapped by :mod:`jettracks.readers.codecs` give the same bytes.

LZMA: imagecodecs (liblzma 5.8) instead of cramjam; every branch of every LZMA file
(real and generated) is compared bit for bit against uproot's own decoder, loaded
fresh from uproot's source so that no switch of this process can have touched it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import cramjam
import numpy as np
import pytest
import uproot
from uproot import compression

import jettracks.readers  # noqa: F401  (the switches are made on import)
from jettracks import generate
from jettracks.readers import codecs


def _pristine_uproot_lzma():
    """uproot's own ``_DecompressLZMA.decompress`` (cramjam), from a fresh load of its source."""
    spec = importlib.util.spec_from_file_location("_pristine_uproot_compression", compression.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    original = module._DecompressLZMA.decompress
    assert "cramjam" in original.__code__.co_names  # uproot's cramjam path, not a patched one
    return original


UPROOT_LZMA = _pristine_uproot_lzma()


def _lzma_files(root: Path) -> list[Path]:
    """Files under ``root`` with at least one LZMA-compressed branch."""
    found = []
    for path in sorted(root.rglob("*.root")):
        with uproot.open(path) as f:
            trees = [k for k, c in f.classnames().items() if c == "TTree"]
            # a branch's own compression, else the file's (uproot writes only the file's)
            if any(str(b.compression or f.file.compression).startswith("LZMA") for t in trees for b in f[t].branches):
                found.append(path)
    return found


def _read_all(path: Path) -> dict[str, list]:
    """Every branch of every tree: each basket's decompressed bytes (and entry offsets), and
    the branch's array as (form, length, raw buffers) of the packed awkward array, or the
    error uproot raises for a type it cannot interpret (e.g. ``edm::ProcessHistory``)."""
    out = {}
    with uproot.open(path, array_cache=None, object_cache=None) as f:  # every basket decoded again
        for key, cls in f.classnames().items():
            if cls != "TTree":
                continue
            tree = f[key]
            for name in tree.keys(recursive=True):
                branch = tree[name]
                record: list = []
                for i in range(branch.num_baskets):
                    basket = branch.basket(i)
                    offsets = basket.byte_offsets
                    record.append((basket.data.tobytes(), None if offsets is None else offsets.tobytes()))
                try:
                    array = ak.to_packed(branch.array(library="ak"))
                except (NotImplementedError, uproot.deserialization.DeserializationError) as err:
                    record.append(type(err).__name__)
                else:
                    form, length, buffers = ak.to_buffers(array)
                    record.append((form.to_json(), length))
                    record.extend(sorted((k, np.asarray(v).tobytes()) for k, v in buffers.items()))
                out[f"{key}:{name}"] = record
    return out


def _counting(monkeypatch, fn) -> list[int]:
    """Install ``fn`` as uproot's LZMA decoder, counting its calls."""
    calls: list[int] = []

    def counted(self, data, uncompressed_bytes=None):
        calls.append(uncompressed_bytes)
        return fn(self, data, uncompressed_bytes)

    monkeypatch.setattr(compression._DecompressLZMA, "decompress", counted)
    return calls


def _assert_same_bits(path: Path, monkeypatch) -> int:
    fast_calls = _counting(monkeypatch, codecs._imagecodecs_lzma_decompress)
    fast = _read_all(path)
    plain_calls = _counting(monkeypatch, UPROOT_LZMA)
    plain = _read_all(path)
    monkeypatch.undo()
    # Each read went through its decoder (the counts can differ by a few hundred baskets
    # between two reads of one file in this process: seen, cause not found; every basket's
    # bytes are compared below either way).
    assert fast_calls and plain_calls
    assert fast.keys() == plain.keys() and fast
    for name in plain:
        assert fast[name] == plain[name], name
    return min(len(fast_calls), len(plain_calls))


@pytest.fixture(scope="module")
def generated_lzma(tmp_path_factory) -> list[Path]:
    """PFNano files of ROOT's layout (~32 kB LZMA-9 baskets), small, and one of a few big
    baskets (uproot's ``extend`` layout) at another LZMA level."""
    d = tmp_path_factory.mktemp("codecs")
    return [
        generate.generate_file(d / "root_layout.root", format="pfnano", n_events=300, seed=3),
        generate.generate_file(d / "one_basket.root", format="pfnano", n_events=200, seed=5,
                               basket_events=100, compression_level=4),
    ]


def test_real_lzma_files_read_bit_for_bit(cms_dir, monkeypatch):
    files = _lzma_files(cms_dir.parent)
    assert any(p.name == "pfnano.root" for p in files), files  # the real PFNano is LZMA-9
    for path in files:
        assert _assert_same_bits(path, monkeypatch) > 100, path


def test_generated_lzma_files_read_bit_for_bit(generated_lzma, monkeypatch):
    for path in generated_lzma:
        with uproot.open(path) as f:
            assert str(f["Events"]["PFCands_pt"].compression or f.file.compression).startswith("LZMA"), path
        assert _assert_same_bits(path, monkeypatch) > 0, path


def test_multi_block_basket_is_split_by_uproot(monkeypatch):
    """A basket over 16 MiB is several xz blocks: uproot calls the decoder once a block."""
    raw = np.random.default_rng(7).integers(0, 4, 2**24 + 5000, dtype=np.uint8).tobytes()
    packed = np.frombuffer(uproot.compression.compress(raw, uproot.LZMA(1)), np.uint8)
    calls = _counting(monkeypatch, codecs._imagecodecs_lzma_decompress)
    info: list = []
    chunk = uproot.source.chunk.Chunk.wrap(None, packed)
    out = compression.decompress(chunk, uproot.source.cursor.Cursor(0), {}, len(packed), len(raw), info)
    assert [name for name, _, _ in info] == ["LZMA", "LZMA"]
    assert calls == [2**24 - 1, 5001]
    assert out.raw_data.tobytes() == raw


def test_decoder_takes_buffers_and_returns_bytes():
    raw = np.arange(50_000, dtype=np.float32).tobytes()
    stream = cramjam.xz.compress(raw)
    stream_bytes = bytes(stream)
    decode = codecs._imagecodecs_lzma_decompress
    for data in (stream_bytes, np.frombuffer(stream_bytes, np.uint8), memoryview(stream_bytes)):
        for size in (len(raw), None):
            out = decode(None, data, size)
            assert isinstance(out, bytes) and out == raw
    assert bytes(UPROOT_LZMA(None, np.frombuffer(stream_bytes, np.uint8), len(raw))) == raw


def test_switch_active_after_importing_readers():
    assert compression._DecompressLZMA.decompress is codecs._imagecodecs_lzma_decompress
    assert compression._decompress_ZLIB.library == "isal"
    # A fresh process, as a worker: importing the readers switches both; the engines'
    # per-file use_fast_codecs() afterwards keeps them.
    code = (
        "import json, jettracks.readers as r; from jettracks.readers.codecs import use_fast_codecs;"
        "a = r.active_codecs(); use_fast_codecs(); print(json.dumps([a, r.active_codecs()]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "JETTRACKS_LZMA"}
    before, after = json.loads(subprocess.check_output([sys.executable, "-c", code], env=env, text=True))
    assert before["LZMA"].startswith("imagecodecs ") and "liblzma 5." in before["LZMA"]
    assert before["ZLIB"].startswith("isal ")
    assert after == before
    # JETTRACKS_LZMA=cramjam keeps uproot's own choice.
    kept, _ = json.loads(subprocess.check_output([sys.executable, "-c", code], env={**env, "JETTRACKS_LZMA": "cramjam"},
                                                 text=True))
    assert kept["LZMA"].startswith("cramjam ")


def test_switch_declines_without_imagecodecs_or_other_uproot(monkeypatch):
    monkeypatch.setattr(compression._DecompressLZMA, "decompress", UPROOT_LZMA)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import fails
    assert codecs.use_fast_lzma() is False  # the standard library's lzma decodes instead
    assert compression._DecompressLZMA.decompress is codecs._stdlib_lzma_decompress
    assert codecs.active_codecs()["LZMA"].startswith("lzma (standard library, liblzma ")
    monkeypatch.delitem(sys.modules, "imagecodecs")
    monkeypatch.setenv("JETTRACKS_LZMA", "cramjam")  # uproot's own choice is kept
    monkeypatch.setattr(compression._DecompressLZMA, "decompress", UPROOT_LZMA)
    assert codecs.use_fast_lzma() is False
    assert compression._DecompressLZMA.decompress is UPROOT_LZMA
    monkeypatch.delenv("JETTRACKS_LZMA")

    def other(self, data, size, flags=0):  # an uproot whose decoder takes other arguments
        raise AssertionError

    monkeypatch.setattr(compression._DecompressLZMA, "decompress", other)
    assert codecs.use_fast_lzma() is False
    assert compression._DecompressLZMA.decompress is other
    monkeypatch.setattr(compression._DecompressLZMA, "decompress", UPROOT_LZMA)
    assert codecs.use_fast_lzma() is True
    assert codecs.active_codecs()["LZMA"].startswith("imagecodecs ")


def _corrupt(path: Path, source: Path, *, branch: str = "PFCands_pt") -> Path:
    """A copy whose second ``branch`` basket holds garbage inside its LZMA stream."""
    with uproot.open(source) as f:
        seek = int(f["Events"][branch].member("fBasketSeek")[1])
    data = bytearray(source.read_bytes())
    data[seek + 100: seek + 600] = b"\x55" * 500
    path.write_bytes(bytes(data))
    return path


def _read_error(path: Path) -> BaseException:
    with pytest.raises(Exception) as info, uproot.open(path) as f:
        f["Events"].arrays(["PFCands_pt"])
    return info.value


def test_corrupt_basket_error_names_the_file(cms_dir, tmp_path, monkeypatch):
    bad = _corrupt(tmp_path / "bad.root", cms_dir / "pfnano.root")
    ours = _read_error(bad)
    monkeypatch.setattr(compression._DecompressLZMA, "decompress", UPROOT_LZMA)
    theirs = _read_error(bad)
    # uproot's own path raises cramjam's DecompressionError, without the file; ours the same type, naming it.
    assert type(ours) is type(theirs) is cramjam.DecompressionError
    assert str(bad) in str(ours) and "LZMA" in str(ours)


@pytest.mark.parametrize("change", ["short", "long"])
def test_block_of_another_size_than_its_header_raises(change):
    """imagecodecs returns what it decoded without an error; the decoder checks the size."""
    raw = np.arange(20_000, dtype=np.int32).tobytes()
    stream = bytes(cramjam.xz.compress(raw))
    data, size = (stream[: len(stream) // 2], len(raw)) if change == "short" else (stream, len(raw) - 10)
    with pytest.raises(cramjam.DecompressionError, match="the block header says"):
        codecs._imagecodecs_lzma_decompress(None, data, size)
    with pytest.raises((cramjam.DecompressionError, ValueError)):  # uproot's: an error too
        out = UPROOT_LZMA(None, data, size)
        if len(out) != size:  # uproot checks the size after its decoder
            raise ValueError("size")


def test_corrupt_basket_in_a_run_names_the_file(cms_dir, tmp_path):
    """Through the run: the chunk's error names the file and says DecompressionError."""
    from jettracks.execution import RunError, run_config

    bad = _corrupt(tmp_path / "bad.root", cms_dir / "pfnano.root")
    cfg = {
        "name": "codecs-corrupt",
        "datasets": {"tt": {"files": [str(bad)], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "serial", "engine": "runner", "chunksize": 4},
        "output": {"dir": str(tmp_path / "out"), "plots": False, "ml": False},
    }
    with pytest.raises(RunError) as err:
        run_config(cfg, progress=False)
    msg = str(err.value)
    assert str(bad) in msg and "DecompressionError" in msg and "LZMA basket block" in msg
