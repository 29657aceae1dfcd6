"""A headless Chromium driven over the Chrome DevTools Protocol, with the standard library only.

No websocket package is a dependency of the tests, so this module carries a minimal client
(RFC 6455: the HTTP upgrade, masked client frames, fragmented and control frames), enough for
CDP's JSON messages::

    with Browser.launch(find_chromium()) as b:
        b.call("Runtime.enable")
        b.navigate("file:///.../index.html")
        b.evaluate("document.title")
        b.errors()      # console errors, uncaught exceptions, error log entries seen so far

The browser runs with its own temporary profile and is always killed on exit.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from urllib.parse import urlparse

#: Flags for Debian's chromium running headless as root on a machine without network
#: (see MACHINE-NOTES "A real browser"): without the background-networking flags it keeps
#: trying to reach Google services.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
                  "--remote-debugging-port=0", "--remote-allow-origins=*"]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """A blocking client WebSocket carrying text messages."""

    def __init__(self, url: str, timeout: float = 30.0):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, self._buf = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"websocket handshake refused: {status.decode(errors='replace')}")

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("websocket closed by the peer")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)  # clients must mask every frame
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def recv(self) -> str:
        """The next complete text message (answers pings, reassembles fragments)."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the peer")
            parts.append(payload)
            if fin:
                return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Browser:
    """One headless Chromium process and a CDP connection to its first page."""

    def __init__(self, proc: subprocess.Popen, profile: str, ws: WebSocket):
        self.proc, self.profile, self.ws = proc, profile, ws
        self._next_id = 0
        self.events: list[dict] = []

    @classmethod
    def launch(cls, binary: str, *, timeout: float = 30.0) -> "Browser":
        profile = tempfile.mkdtemp(prefix="fastsae-chromium-")
        log = open(os.path.join(profile, "stderr.log"), "wb")
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        try:
            port_file = os.path.join(profile, "DevToolsActivePort")
            deadline = time.monotonic() + timeout
            port = None
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {proc.returncode}: {cls._log_tail(profile)}")
                try:
                    with open(port_file) as f:
                        lines = f.read().split("\n")
                    if lines and lines[0].strip():
                        port = int(lines[0])
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.05)
            if port is None:
                raise RuntimeError(f"chromium wrote no DevToolsActivePort in {timeout} s: {cls._log_tail(profile)}")
            page = None
            while time.monotonic() < deadline and page is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/json/list")
                targets = json.loads(conn.getresponse().read())
                conn.close()
                page = next((t for t in targets if t.get("type") == "page"), None)
                if page is None:
                    time.sleep(0.05)
            if page is None:
                raise RuntimeError("chromium has no page target")
            return cls(proc, profile, WebSocket(page["webSocketDebuggerUrl"], timeout=timeout))
        except BaseException:
            cls._kill(proc, profile)
            raise

    @staticmethod
    def _log_tail(profile: str) -> str:
        try:
            with open(os.path.join(profile, "stderr.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def _kill(proc: subprocess.Popen, profile: str) -> None:
        if proc.poll() is None:
            proc.terminate()  # lets the browser take its renderer processes down with it
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(profile, ignore_errors=True)

    def close(self) -> None:
        try:
            self.ws.close()
        except OSError:
            pass
        self._kill(self.proc, self.profile)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- protocol ---------------------------------------------------------------------------
    def call(self, method: str, **params) -> dict:
        """Send a command and return its result (events arriving meanwhile are kept)."""
        self._next_id += 1
        mid = self._next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == "Page.javascriptDialogOpening":
                    # A dialog blocks the page (and every later evaluate): dismiss it at once;
                    # errors() reports it. The reply to this command is skipped like any other.
                    self._next_id += 1
                    self.ws.send(json.dumps({"id": self._next_id, "method": "Page.handleJavaScriptDialog",
                                             "params": {"accept": False}}))

    def evaluate(self, expression: str):
        """Value of a JavaScript expression in the page (raises on a JavaScript exception)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0):
        """Poll until the expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {expression!r}")
            time.sleep(0.05)

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error-level log entries seen so far."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
            elif m == "Page.javascriptDialogOpening":
                out.append("dialog: " + p.get("message", ""))
        return out
