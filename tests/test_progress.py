"""The progress display: numbers (chunks, files, entries, failures, ETA), plain lines when stdout
is not a terminal, the display chosen, and a real engine run reporting through it."""

from __future__ import annotations

import io

from jettracks.engines import ChunkRecord, ChunkSpec
from jettracks.engines.progress import Progress, detect_mode


def _record(file: str, start: int, stop: int, status: str = "ok") -> ChunkRecord:
    return ChunkRecord(ChunkSpec("d", file, "Events", start, stop), status, "OSError: x" if status == "failed" else None)


def test_counts_files_entries_and_failures():
    files = ["a.root", "a.root", "b.root"]
    out = io.StringIO()
    with Progress(True, 3, "Processing", files=files, dashboard="http://dash:8787/status",
                  mode="plain", interval=3600, stream=out) as bar:
        bar.advance(_record("a.root", 0, 100))
        s = bar.state()
        assert (s.chunks_done, s.files_done, s.files_total, s.entries_done, s.failures) == (1, 0, 2, 100, 0)
        assert s.eta_s is not None and s.entries_per_s > 0
        bar.advance(_record("b.root", 0, 50, "failed"))
        s = bar.state()
        assert (s.chunks_done, s.files_done, s.entries_done, s.failures) == (2, 1, 100, 1)
        bar.advance(_record("a.root", 100, 180, "checkpoint"))
        s = bar.state()
        assert (s.chunks_done, s.files_done, s.entries_done, s.failures) == (3, 2, 180, 1)
    lines = out.getvalue().splitlines()
    # the first line (with the dashboard), the first chunk, nothing within the interval, the last chunk
    assert lines[0] == "Processing: 3 chunks of 2 files; dashboard http://dash:8787/status"
    assert len(lines) == 3
    assert lines[1].startswith("Processing: chunks 1/3, files 0/2, ")
    assert lines[2].startswith("Processing: chunks 3/3, files 2/2, ") and lines[2].endswith(", 1 failed")
    assert "ETA 0 s" in lines[2]


def test_plain_lines_every_interval_and_where_an_interrupted_run_stopped():
    out = io.StringIO()
    try:
        with Progress(True, 4, "chunks", files=["f"] * 4, mode="plain", interval=0, stream=out) as bar:
            bar.advance(_record("f", 0, 10))
            bar.advance(_record("f", 10, 20))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["chunks: chunks 1/4", "chunks: chunks 2/4", "chunks: stopped at chunks 2/4"]


def test_disabled_counts_but_prints_nothing(capsys):
    with Progress(False, 2, files=["a", "b"]) as bar:
        bar.advance(_record("a", 0, 5))
    assert bar.state().files_done == 1 and bar.mode == "off"
    assert capsys.readouterr() == ("", "")


def test_mode_follows_the_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert detect_mode(io.StringIO()) == "plain"
    assert detect_mode(Tty()) == "rich"


def test_engine_run_reports_progress_in_plain_lines(small_sample, capsys):
    from jettracks.config import ExecutorConfig
    from jettracks.engines import run_engine
    from processors.jet_tracks import JetTrackProcessor

    files = [str(p) for p in small_sample["jetntuple"][:2]]
    import uproot

    entries = {f: uproot.open(f)["AK4jets/jetTree"].num_entries for f in files}
    fileset = {"d": {"files": files, "treename": "AK4jets/jetTree", "metadata": {"format": "jetntuple", "is_mc": True}}}
    meta = {("d", f): {"numentries": n, "uuid_hex": ""} for f, n in entries.items()}
    result = run_engine("runner", fileset, meta, JetTrackProcessor(), ex=ExecutorConfig(chunksize=60), progress=True)
    out = capsys.readouterr().out.splitlines()
    n_chunks = len(result.records)
    assert n_chunks > 2 and all(r.status == "ok" for r in result.records), result.records[0]
    assert out[0] == f"Processing: {n_chunks} chunks of 2 files"
    assert out[-1].startswith(f"Processing: chunks {n_chunks}/{n_chunks}, files 2/2, ") and out[-1].endswith(" 0 failed")
