"""Headless Chromium driven over the Chrome DevTools protocol on a pipe (standard library only).

``start_chromium(workdir)`` starts Debian's ``chromium`` with ``--headless
--remote-debugging-pipe``: the protocol's JSON messages travel over file
descriptors 3 (to the browser) and 4 (from it), NUL-terminated, so no port,
no websocket client and no network are needed. :meth:`Chromium.open_page`
opens a URL in a new tab and returns a :class:`Page` that records console
messages, uncaught exceptions, log entries and every network request, and
can evaluate JavaScript and take screenshots.

Raises :class:`ServiceUnavailable` when the browser is missing or does not
answer (the pytest plugin turns that into a skip, or a failure under
``JETTRACKS_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Chromium", "Page", "ServiceUnavailable", "find_chromium", "start_chromium"]

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ServiceUnavailable(RuntimeError):
    """The browser cannot be started here (the message says why)."""


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$JETTRACKS_CHROMIUM``, else the first of :data:`BINARIES` on PATH)."""
    env = os.environ.get("JETTRACKS_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    """One tab, attached with a flat session.

    Attributes:
        console: console messages ``(type, text)`` (``Runtime.consoleAPICalled``).
        exceptions: uncaught exception texts (``Runtime.exceptionThrown``).
        log: browser log entries ``(level, text, url)`` (``Log.entryAdded``: failed loads, CSP, ...).
        requests: URLs of every network request the page made (``Network.requestWillBeSent``).
    """

    browser: Chromium
    session: str
    console: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error-level log entries, one line each."""
        out = [f"console.{t}: {text}" for t, text in self.console if t in ("error", "assert")]
        out += [f"exception: {e}" for e in self.exceptions]
        out += [f"log {lvl}: {text} ({url})" for lvl, text, url in self.log if lvl == "error"]
        return out

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (``returnByValue``; promises awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def screenshot(self, path: str | os.PathLike) -> Path:
        """Write a PNG of the viewport (the first screen) to ``path``."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        p = Path(path)
        p.write_bytes(base64.b64decode(data))
        return p


class Chromium:
    """A running headless Chromium (use :func:`start_chromium`); :meth:`stop` ends it."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, profile: Path) -> None:
        self.proc, self._w, self._r, self.profile = proc, to_browser, from_browser, profile
        self._buf = b""
        self._id = 0
        self._pages: dict[str, Page] = {}
        self.version = ""

    # -- protocol ---------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30) -> dict:
        """Send one command and wait for its answer (events meanwhile go to their pages)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        want = self._id
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline, method)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self._dispatch(m)

    def wait_event(self, method: str, session: str, timeout: float = 30) -> dict:
        """Wait for event ``method`` on ``session`` (others are dispatched meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline, method)
            self._dispatch(m)
            if m.get("method") == method and m.get("sessionId") == session:
                return m.get("params", {})

    def _next(self, deadline: float, what: str) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium: no answer to {what}")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (status {self.proc.poll()}) while waiting for {what}")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def _dispatch(self, m: dict) -> None:
        page = self._pages.get(m.get("sessionId", ""))
        if page is None or "method" not in m:
            return
        p, method = m.get("params", {}), m["method"]
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            page.console.append((p.get("type", ""), text))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            page.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            page.log.append((e.get("level", ""), e.get("text", ""), e.get("url", "")))
        elif method == "Network.requestWillBeSent":
            page.requests.append(p.get("request", {}).get("url", ""))

    # -- pages ------------------------------------------------------------------------------
    def open_page(self, url: str, *, width: int = 1280, height: int = 900, timeout: float = 60) -> Page:
        """Open ``url`` in a new tab of ``width`` x ``height`` CSS pixels; return once it has loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self._pages[session] = page
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", session, timeout=timeout)
        return page

    def stop(self) -> None:
        """End the browser and remove its profile directory."""
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def start_chromium(workdir: str | os.PathLike, *, timeout: float = 60) -> Chromium:
    """Start headless Chromium with a fresh profile under ``workdir``.

    Raises:
        ServiceUnavailable: no binary, or it does not answer the protocol within ``timeout`` s.
    """
    binary = find_chromium()
    if binary is None:
        if os.environ.get("JETTRACKS_CHROMIUM"):
            raise ServiceUnavailable(f"JETTRACKS_CHROMIUM={os.environ['JETTRACKS_CHROMIUM']} is not an executable")
        raise ServiceUnavailable(
            f"no Chromium ({', '.join(BINARIES)} not on PATH; Debian: apt-get install chromium)"
        )
    profile = Path(workdir) / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    to_r, to_w = os.pipe()      # we write commands to to_w; the browser reads fd 3
    from_r, from_w = os.pipe()  # the browser writes fd 4; we read from_r
    args = [
        binary, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
        "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage",
        "about:blank",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(2, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    log = open(profile / "stderr.log", "wb")

    def child_fds() -> None:  # fds 3 and 4, as --remote-debugging-pipe expects
        import fcntl

        r, w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)  # out of 3/4's way
        os.dup2(r, 3)
        os.dup2(w, 4)

    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=child_fds, pass_fds=(3, 4))
    except OSError as err:
        raise ServiceUnavailable(f"{binary}: cannot start: {err}") from None
    finally:
        log.close()
    os.close(to_r)
    os.close(from_w)
    browser = Chromium(proc, to_w, from_r, profile)
    try:
        browser.version = browser.send("Browser.getVersion", timeout=timeout).get("product", "")
    except (TimeoutError, RuntimeError, ValueError) as err:
        tail = (profile / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
        browser.stop()
        raise ServiceUnavailable(f"{binary} does not answer: {err}; stderr: {' | '.join(tail)}") from None
    return browser
