"""Headless Chromium driven through the DevTools protocol over --remote-debugging-pipe (the transport
Playwright and Puppeteer use): JSON messages separated by NUL bytes on the browser's fds 3 (in) and
4 (out). No browser download, no port, no extra package."""
import base64
import json
import os
import select
import subprocess
import time

# key name -> (code, windowsVirtualKeyCode, text)
KEYS = {"Tab": ("Tab", 9, ""), "Enter": ("Enter", 13, "\r"), " ": ("Space", 32, " "),
        "ArrowLeft": ("ArrowLeft", 37, ""), "ArrowUp": ("ArrowUp", 38, ""),
        "ArrowRight": ("ArrowRight", 39, ""), "ArrowDown": ("ArrowDown", 40, "")}
KEYS.update({str(d): (f"Digit{d}", 48 + d, str(d)) for d in range(10)})


class Chromium:
    """One headless browser; use as a context manager. `log` receives the browser's stderr."""

    def __init__(self, executable, profile_dir, log, width=1280, height=900):
        to_r, self._out = os.pipe()
        self._in, from_w = os.pipe()
        flags = ["--headless", "--remote-debugging-pipe", f"--user-data-dir={profile_dir}", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
                 "--mute-audio", "--hide-scrollbars", f"--window-size={width},{height}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}', executable, *flags,
                                          "about:blank"], pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._events, self._id = b"", [], 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (RuntimeError, OSError, TimeoutError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass

    def _died(self, what):
        with open(self.log, errors="replace") as fh:
            tail = fh.read()[-2000:]
        return RuntimeError(f"chromium {what}; its log ({self.log}) ends:\n{tail}")

    def _read(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from chromium in time")
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise self._died("closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=None, timeout=30):
        """The result of one DevTools command; events read meanwhile are kept for wait_event."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._out, data):]
        except BrokenPipeError:
            raise self._died("is gone") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method, match=lambda params: True, timeout=30):
        """The params of the first (kept or new) event `method` whose params satisfy `match`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method and match(event.get("params", {})):
                    self._events.remove(event)
                    return event["params"]
            self._events.append(self._read(deadline))

    def events(self, method):
        return [e["params"] for e in self._events if e.get("method") == method]

    def new_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        return Page(self, self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])


class Page:
    def __init__(self, browser, session):
        self.browser, self.session = browser, session

    def send(self, method, params=None, timeout=30):
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url):
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired")

    def eval(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def press(self, key):
        """A key as the user types it (keyDown with its text, then keyUp)."""
        code, vk, text = KEYS[key]
        event = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.send("Input.dispatchKeyEvent", {**event, "type": "keyDown" if text else "rawKeyDown", "text": text})
        self.send("Input.dispatchKeyEvent", {**event, "type": "keyUp"})

    def type(self, text):
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path):
        data = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        with open(path, "wb") as fh:
            fh.write(data)
        return path
