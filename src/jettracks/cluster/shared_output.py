"""Workers must see the client's output directory; check it before and after a run.

Dask workers write the per-jet ML parts (``<out>/ml/part-*.arrow``)
and the chunk checkpoints (``<out>/checkpoints/<fingerprint>/...``) themselves,
at the client's path. A worker whose filesystem does not hold that path
(another host, a container, a private ``/tmp``) writes them where the client
never looks: the run used to end ``ok`` with the ML dataset silently lost.

:class:`OutputGuard` wraps the cluster context of a run:

1. **Before processing** the client writes a probe file
   ``<out>/.jettracks-probe-<token>`` (content: the random token) and every
   current worker must read it back (``client.run``). Any worker that cannot
   stops the run with one :class:`~jettracks.execution.RunError` line naming the
   worker, the directory and the fix.
2. **Workers that join later** are checked by :class:`OutputProbePlugin`, a
   ``distributed.WorkerPlugin`` registered for the run. Its ``setup`` runs on a
   joining worker before the worker handles any message from the scheduler (in
   ``distributed`` the worker's scheduler stream is read only after its plugins
   are set up). A worker that cannot read the probe is switched at once to
   ``closing_gracefully`` (the scheduler assigns it nothing more and the worker
   starts no task), the rejection is logged as a scheduler event, and the worker
   (with its nanny, so it is not restarted) is closed; tasks the scheduler had
   already sent it are rescheduled on the other workers. Raising from ``setup``
   would not do: ``distributed`` only logs a plugin error of a joining worker
   and lets it work. The plugin is unregistered when the run ends; should the
   client die first, a plugin left behind rejects nobody once the scheduler
   reports the client gone.
3. **After the run** (:meth:`OutputGuard.verify`) every ML part a chunk
   reported (``output["ml_parts"]``) and the checkpoint of every finished chunk
   must exist at the client; otherwise the report is saved with status
   ``failed`` and a ``RunError`` names what is missing. Workers rejected during
   the run appear in the report's ``notices``.

The serial backend (no client) needs no probe; in-process and local clusters
pass it at once. Only the probe file this module wrote is ever removed.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from ..io.outfs import RemotePath, create_new, out_path

__all__ = ["FIX", "OutputGuard", "OutputProbePlugin", "probe_reason"]

logger = logging.getLogger(__name__)

PROBE_PREFIX = ".jettracks-probe-"
#: What to do about a worker that does not share the client's filesystem.
FIX = ("run workers on a filesystem shared with the client (same path), set output.transfer: dask "
       "(ML parts and checkpoints come back through Dask), set output.dir to a root:// URL client and "
       "workers reach, or use --backend serial/local")
#: Seconds a worker keeps looking for the probe before it is declared absent
#: (a shared filesystem may show a new file a moment late).
DEFAULT_WAIT_S = 3.0
_MAX_LISTED = 20  # missing paths kept in report.json


def probe_reason(path: str, token: str, wait_s: float = 0.0) -> str | None:
    """Why the probe file ``path`` is not readable here with content ``token`` (None: it is).

    Args:
        path: absolute path of the probe file (the client's path).
        token: the content the client wrote.
        wait_s: seconds to keep retrying (every 0.2 s) while it is not visible.

    Returns:
        None, or a short phrase such as ``"probe file absent"``.
    """
    probe = out_path(path)
    deadline = time.monotonic() + max(wait_s, 0.0)
    while True:
        try:
            with probe.open("r", encoding="utf-8") as f:
                content = f.read(256).strip()
            reason = None if content == token else "probe file holds another token"
        except FileNotFoundError:
            reason = "probe file absent" if probe.parent.is_dir() else "directory absent"
        except OSError as err:
            if isinstance(probe, RemotePath):  # the server's message says which (absent, unreachable)
                reason = f"probe file unreadable: {' '.join(str(err).split())[:200]}"
            else:
                reason = f"probe file unreadable: {type(err).__name__}: {err.strerror or err}"
        if reason is None or time.monotonic() >= deadline:
            return reason
        time.sleep(0.2)


def _worker_probe(path: str, token: str, wait_s: float) -> str | None:
    """``client.run`` target: :func:`probe_reason` on the worker."""
    return probe_reason(path, token, wait_s)


def __getattr__(name: str) -> Any:
    # The plugin subclasses distributed's WorkerPlugin: defined in its own module so that a
    # serial run does not import distributed (and pandas) at all (~0.4 s, ~50 MB).
    if name == "OutputProbePlugin":
        from .probe_plugin import OutputProbePlugin

        return OutputProbePlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OutputGuard:
    """Context manager around a cluster context (``cluster.connect(...)``) that probes the workers.

    ``with OutputGuard(ctx, out_dir) as handle`` enters ``ctx``, then, when
    ``handle.client`` is not None, writes the probe, checks every worker and
    registers :class:`OutputProbePlugin`; on exit it collects the workers the
    plugin rejected (:attr:`rejected`), unregisters the plugin and removes the
    probe file, then exits ``ctx``.

    Args:
        cluster_ctx: context manager yielding a handle with a ``client`` attribute.
        out_dir: the run's output directory (``pathlib.Path``; must exist).
        console: ``rich`` console for warnings (optional).
        wait_s: seconds a worker waits for the probe to appear (float, default 3).

    Raises (on enter):
        RunError: a worker cannot read the probe, or the plugin cannot be registered.
    """

    def __init__(self, cluster_ctx, out_dir: str | os.PathLike, *, console: Any = None, wait_s: float = DEFAULT_WAIT_S,
                 transfer: str = "shared") -> None:
        self._ctx = cluster_ctx
        #: ``dask``: the workers write nothing into out_dir (output.transfer), so they need not see it
        self.transfer = transfer
        self.out_dir = out_path(out_dir)
        self.console = console
        self.wait_s = wait_s
        self.client = None
        self.token: str | None = None
        self.probe: Path | None = None
        self.topic: str | None = None
        self._registered = False
        #: workers refused during the run: dicts with ``worker``, ``reason``, ``line``.
        self.rejected: list[dict[str, Any]] = []

    # -- context manager ------------------------------------------------------------------
    def __enter__(self):
        handle = self._ctx.__enter__()
        try:
            self._start(getattr(handle, "client", None))
        except BaseException:  # clean up, leave the cluster context, re-raise
            exc = sys.exc_info()
            try:
                self._finish()
            finally:
                self._ctx.__exit__(*exc)
            raise
        return handle

    def __exit__(self, *exc) -> bool:
        try:
            self._finish()
        finally:
            suppress = self._ctx.__exit__(*exc)
        return bool(suppress)

    # -- before ---------------------------------------------------------------------------
    def _start(self, client) -> None:
        if client is None or self.transfer == "dask":
            return
        from ..errors import RunError

        self.client = client
        self.token = secrets.token_hex(8)
        self.topic = f"jettracks-output-probe-{self.token}"
        probe = self.out_dir / f"{PROBE_PREFIX}{self.token}"
        create_new(probe, self.token + "\n")  # never overwrite a file we did not write
        self.probe = probe
        results = client.run(_worker_probe, str(probe), self.token, self.wait_s, on_error="return")
        bad = {}
        for addr, res in sorted(results.items()):
            if isinstance(res, BaseException):
                from ..failures import error_line

                bad[addr] = f"probe failed: {error_line(res)}"
            elif res is not None:
                bad[addr] = str(res)
        if bad:
            addr, reason = next(iter(bad.items()))
            more = f" (and {len(bad) - 1} more worker(s))" if len(bad) > 1 else ""
            raise RunError(
                f"worker {addr}{more} cannot see the output directory {self.out_dir} ({reason}): {FIX}"
            )
        from .probe_plugin import OutputProbePlugin

        plugin = OutputProbePlugin(str(probe), self.token, client.id, self.topic, self.wait_s)
        try:
            client.register_plugin(plugin, name=self.topic)
        except Exception as err:  # noqa: BLE001 - any failure becomes one line
            from ..failures import error_line

            raise RunError(
                f"cannot register the output-directory check on the workers: {error_line(err)}"
            ) from None
        self._registered = True

    # -- after ----------------------------------------------------------------------------
    def _finish(self) -> None:
        """Collect rejections, unregister the plugin, remove the probe; never raises."""
        client = self.client
        if client is not None and self.topic is not None:
            try:
                events = client.get_events(self.topic)
                self.rejected = [dict(msg) for _, msg in events if isinstance(msg, dict)]
            except Exception as err:  # noqa: BLE001 - cleanup goes on
                logger.warning("jettracks: cannot read the worker rejections: %s", err)
            if self._registered:
                try:
                    client.unregister_worker_plugin(self.topic)
                except Exception as err:  # noqa: BLE001
                    logger.warning("jettracks: cannot unregister plugin %s: %s", self.topic, err)
                self._registered = False
        if self.probe is not None:
            try:  # only the file we wrote: same name and our token inside
                if self.probe.read_text(encoding="utf-8").strip() == self.token:
                    self.probe.unlink()
            except OSError:
                pass
            self.probe = None

    def verify(
        self,
        report: dict[str, Any],
        output: dict[str, Any],
        *,
        fileset: dict | None = None,
        meta: dict | None = None,
        chunk_times: list | None = None,
        checkpointer: Any = None,
    ) -> None:
        """Check that the workers' outputs are at the client; fail the run otherwise.

        Adds a notice per worker rejected during the run. Checks that every path
        in ``output["ml_parts"]`` exists, and, when ``checkpointer`` (with a
        ``filepath(metadata)`` method) and ``chunk_times`` (``(file, start, stop,
        seconds)`` per finished chunk) are given, that each finished chunk's
        checkpoint exists (a file listed in several datasets: any of them).

        Raises:
            RunError: something is missing; ``report`` then has status ``failed``
                and ``missing_outputs``, and is saved as ``report.json``.
        """
        from ..errors import RunError

        if self.rejected:
            notices = list(report.get("notices", []))
            for r in self.rejected:
                notices.append(f"worker {r.get('worker')} {r.get('line', r.get('reason'))}: refused and closed")
                if self.console is not None:
                    self.console.print(
                        f"[yellow]warning[/yellow] worker {r.get('worker')} joined during the run but "
                        f"{r.get('line', r.get('reason'))}: it was closed before taking work"
                    )
            report["notices"] = sorted(set(notices))
        parts = [out_path(p) for p in (output.get("ml_parts") or [])]
        from ..io.mldata import part_available  # a resumed part may live on in the finalized files

        missing_parts = [str(p) for p in parts if not part_available(p)]
        missing_ckpt = self._missing_checkpoints(fileset, meta, chunk_times, checkpointer)
        if not (missing_parts or missing_ckpt):
            return
        from ..io.outputs import save_report

        report["status"] = "failed"
        report["missing_outputs"] = {
            "ml_parts": len(missing_parts),
            "ml_parts_reported": len(parts),
            "checkpoints": len(missing_ckpt),
            "checkpoints_expected": len(chunk_times or []) if checkpointer is not None else 0,
            "examples": (missing_parts + missing_ckpt)[:_MAX_LISTED],
        }
        what = []
        if missing_parts:
            what.append(f"{len(missing_parts)} of {len(parts)} ML part(s)")
        if missing_ckpt:
            what.append(f"{len(missing_ckpt)} checkpoint(s)")
        first = (missing_parts + missing_ckpt)[0]
        message = (
            f"{' and '.join(what)} the workers wrote are missing in {self.out_dir} (e.g. {first}): "
            f"{FIX}; see {self.out_dir / 'report.json'}"
        )
        report["error"] = message
        try:
            save_report(self.out_dir, report)
        except OSError as err:
            message += f" (report.json not written: {err.strerror or err})"
        raise RunError(message)

    @staticmethod
    def _missing_checkpoints(fileset, meta, chunk_times, checkpointer) -> list[str]:
        if checkpointer is None or not chunk_times or not fileset or meta is None:
            return []
        filepath = getattr(checkpointer, "filepath", None)
        if filepath is None:
            return []
        datasets_of: dict[str, list[str]] = {}
        for ds, spec in fileset.items():
            for f in spec["files"]:
                datasets_of.setdefault(f, []).append(ds)
        missing = []
        for fname, start, stop, *_ in chunk_times:
            paths = []
            for ds in datasets_of.get(fname, []):
                m = meta.get((ds, fname))
                if m is None:
                    continue
                raw = m["uuid"] if isinstance(m.get("uuid"), bytes) else bytes.fromhex(m.get("uuid_hex") or "")
                # The metadata coffea's Runner gives the checkpointer for this chunk.
                md = {
                    **fileset[ds].get("metadata", {}),
                    "dataset": ds,
                    "filename": fname,
                    "treename": fileset[ds].get("treename"),
                    "entrystart": start,
                    "entrystop": stop,
                    "fileuuid": str(uuidlib.UUID(bytes=raw)) if raw else "",
                }
                paths.append(out_path(filepath(md)))
            if paths and not any(p.is_file() for p in paths):
                missing.append(str(paths[0]))
        return missing
