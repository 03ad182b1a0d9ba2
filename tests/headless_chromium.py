"""Drive headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no websocket
library), with every host name unresolvable, recording each request the page makes."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; ``requests`` lists every URL the page asked for."""

    def __init__(self, width=1500, height=1100):
        self.profile = tempfile.TemporaryDirectory()
        # DevTools messages: we write on fd 3 of Chromium, read from its fd 4, NUL-terminated JSON.
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [CHROMIUM, "--headless=new", "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}",
                "--no-sandbox", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing can leave the machine
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL2 on the CPU
                f"--window-size={width},{height}", "about:blank"]
        # the shell puts the pipe ends on fds 3 and 4, where Chromium expects them
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "bash", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._id, self.requests = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method, session=None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("method") == "Network.requestWillBeSent":
                self.requests.append(reply["params"]["request"]["url"])
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def send(self, method, **params):
        return self.call(method, session=self.session, **params)

    def _read(self):
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path, ready="window.cesynthViewer && (cesynthViewer.ready || cesynthViewer.error)", timeout=60):
        """Load ``path`` from the file system; wait until ``ready`` is true; return the seconds it took."""
        start = time.monotonic()
        self.send("Page.navigate", url=f"file://{os.path.abspath(path)}")
        while not self.evaluate(ready):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{path} not ready after {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - start

    def blank(self):
        """Leave the page for about:blank and give the browser a moment to release its WebGL contexts."""
        self.send("Page.navigate", url="about:blank")
        while self.evaluate("document.URL") != "about:blank":
            time.sleep(0.05)
        time.sleep(0.5)

    def screenshot(self, path=None) -> np.ndarray:
        """The page as an RGB array (uint8); written as PNG to ``path`` when given."""
        from skimage.io import imread

        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        if path:
            with open(path, "wb") as f:
                f.write(png)
        return imread(io.BytesIO(png))[..., :3]

    def key(self, key, code, key_code):
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=key_code)

    def click(self, x, y):
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self):
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self.profile.cleanup()
