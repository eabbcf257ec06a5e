"""A local HTML file as headless Chromium shows it: console errors, the DOM after scripts ran and a screenshot.

Chromium is driven through its DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out, JSON
messages ended by NUL), so no client library is needed. Debian's `chromium` is installed where missing."""

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

INSTALL = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "chromium"]


@dataclass
class Page:
    errors: List[str]  # console.error/assert calls, uncaught exceptions and error log entries (failed loads)
    html: str  # document.documentElement.outerHTML after the load event and scripts ran
    text: str  # document.body.innerText
    screenshot: Path


def chromium() -> str:
    """The path of Debian's chromium, installed with apt-get (as root) where missing."""
    if found := shutil.which("chromium"):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("headless Chromium is missing: install Debian's package as root: " + " ".join(INSTALL))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(INSTALL, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        subprocess.run(["apt-get", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(INSTALL, env=env, check=True, stdout=subprocess.DEVNULL)
    return shutil.which("chromium") or "/usr/bin/chromium"


def render(html_path: Path, screenshot: Path, timeout: float = 60, settle: float = 0.3,
           size: Tuple[int, int] = (1400, 1000), script: str = "") -> Page:
    """Load `html_path` (file://) in headless Chromium, wait for its load event, run `script` (JavaScript, as a
    user's clicks would), wait `settle` seconds more, write a PNG of the viewport (`size`: width, height) to
    `screenshot`."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()

        def onto_3_and_4():  # by way of fds above 3 and 4, which either pipe end may hold
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, replies_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        stderr = open(Path(profile, "stderr"), "w+", errors="replace")
        # --no-sandbox: Chromium refuses to run as root with its sandbox.
        process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=onto_3_and_4,
            pass_fds=(3, 4), start_new_session=True)
        os.close(commands_r)
        os.close(replies_w)
        try:
            return _Session(process, commands_w, replies_r, time.monotonic() + timeout, stderr).page(
                Path(html_path).resolve().as_uri(), Path(screenshot), settle, size, script)
        finally:
            os.close(commands_w)  # at the pipe's end Chromium shuts down, and its helper processes with it
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            os.close(replies_r)
            stderr.close()


class _Session:
    def __init__(self, process, commands, replies, deadline, stderr):
        self.process, self.commands, self.replies, self.deadline, self.stderr = (
            process, commands, replies, deadline, stderr)
        self.buffer, self.ids, self.session = b"", 0, None
        self.errors, self.loaded = [], False

    def page(self, url: str, screenshot: Path, settle: float, size: Tuple[int, int], script: str) -> Page:
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                  mobile=False)
        self.loaded = False
        if failed := self.send("Page.navigate", url=url).get("errorText"):
            raise RuntimeError(f"{url}: {failed}")
        while not self.loaded:
            self.receive()
        if script:
            self.evaluate(script)
        self.evaluate(f"new Promise(done => setTimeout(done, {settle * 1000}))")
        screenshot.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        html = self.evaluate("document.documentElement.outerHTML")
        text = self.evaluate("document.body ? document.body.innerText : ''")
        return Page(list(self.errors), html, text, screenshot)

    def evaluate(self, expression: str):
        reply = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def send(self, method: str, **params) -> dict:
        self.ids += 1
        message = {"id": self.ids, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive()
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def receive(self) -> dict:
        """The next message from Chromium; events are noted on the way."""
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer in time; its stderr:\n{self.tail()}")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.process.poll()}); its stderr:\n{self.tail()}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        method, params = message.get("method"), message.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", a.get("type")))) for a in params["args"])
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"{details['text']} {details.get('exception', {}).get('description', '')}".strip())
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
        return message

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]
