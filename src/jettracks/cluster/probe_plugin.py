"""The worker plugin of :mod:`jettracks.cluster.shared_output` (imports ``distributed``)."""

from __future__ import annotations

import asyncio
import os

from distributed.diagnostics.plugin import WorkerPlugin

from .shared_output import DEFAULT_WAIT_S, FIX, logger, probe_reason

__all__ = ["OutputProbePlugin"]


class OutputProbePlugin(WorkerPlugin):
    """Refuse a worker that cannot read the run's probe file (see the module docstring).

    Args:
        path: the probe file's absolute path (str).
        token: its content (str).
        client_id: ``Client.id`` of the run; when the scheduler no longer knows
            this client the plugin is a leftover and rejects nobody.
        topic: scheduler event topic for rejections (str).
        wait_s: seconds to wait for the probe to appear (float).
    """

    idempotent = False

    def __init__(self, path: str, token: str, client_id: str, topic: str, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.path = path
        self.token = token
        self.client_id = client_id
        self.topic = topic
        self.wait_s = wait_s
        self.name = topic

    async def setup(self, worker) -> None:
        loop = asyncio.get_running_loop()
        # A stalled filesystem must not block the worker's event loop.
        reason = await loop.run_in_executor(None, probe_reason, self.path, self.token, self.wait_s)
        if reason is None or not await self._run_alive(worker):
            return
        from distributed.core import Status

        # First stop taking work (the scheduler hears it and the worker state
        # machine pauses), then say why, then close.
        worker.status = Status.closing_gracefully
        why = f"cannot see the output directory {os.path.dirname(self.path)} ({reason})"
        logger.error("jettracks: worker %s %s: closing it; %s", worker.address, why, FIX)
        try:
            await worker.scheduler.log_event(
                topic=self.topic, msg={"worker": worker.address, "reason": reason, "line": why}
            )
        except Exception as err:  # noqa: BLE001 - the worker is refused either way
            logger.error("jettracks: could not report the rejection to the scheduler: %s", err)
        worker.loop.add_callback(worker.close, nanny=True, reason=f"jettracks: {why}")

    async def _run_alive(self, worker) -> bool:
        """False only when the scheduler says the run's client has gone (a leftover plugin)."""
        try:
            events = await worker.scheduler.events(topic=self.client_id)
        except Exception:  # noqa: BLE001 - cannot tell: refuse the worker, lose nothing
            return True
        actions = {m.get("action") for _, m in events if isinstance(m, dict)}
        # The scheduler truncates a departed client's topic after a delay: empty = gone.
        return bool(events) and "remove-client" not in actions
