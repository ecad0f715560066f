"""The data path through a workspace proxy at size (issue 3 acceptance): 1 GiB each way
byte-exact, 10,000 WebSocket echoes, a client that stops reading does not grow the proxy, and
after a proxy restart the agent's tunnel is back within 2 s."""

import hashlib
import http.server
import socket
import time

import pytest
import requests

from harness import OWNER_USERNAME, serve_app, wait_for
from test_apps import _ws_connect, _ws_frame, _ws_read, ws_port  # noqa: F401 - fixture

GIB = 1 << 30
BLOCK = 1 << 20
_BASE = hashlib.shake_256(b"proxy data").digest(BLOCK)


def _block(i):
    """Block i of the test stream: its number, then fixed bytes (order and content checked)."""
    return i.to_bytes(8, "big") + _BASE[8:]


def _stream_sha256(n):
    h = hashlib.sha256()
    for i in range(n // BLOCK):
        h.update(_block(i))
    return h.hexdigest()


class DataHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        n = int(self.path.split("n=", 1)[1]) if "n=" in self.path else BLOCK
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            for i in range(n // BLOCK):
                self.wfile.write(_block(i))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        total = 0
        while left:
            chunk = self.rfile.read(min(left, BLOCK))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
            total += len(chunk)
        body = f"{total} {h.hexdigest()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Upload:
    """A request body of n bytes made block by block (no 1 GiB in memory)."""

    def __init__(self, n):
        self.n = n
        self.i = 0
        self.buf = b""

    def __len__(self):
        return self.n

    def read(self, size=-1):
        while (size < 0 or len(self.buf) < size) and self.i < self.n // BLOCK:
            self.buf += _block(self.i)
            self.i += 1
        size = len(self.buf) if size < 0 else size
        out, self.buf = self.buf[:size], self.buf[size:]
        return out


@pytest.fixture(scope="module")
def data_port():
    yield from serve_app(DataHandler)


@pytest.fixture(scope="module")
def env(mctx, data_port, ws_port):  # noqa: F811
    stack = mctx.stack()
    _, token = stack.create_proxy("big")
    proxy = stack.start_proxy(token, name="big", tls=False).start()
    stack.wait_status("big", "ok")
    agent_token = stack.create_workspace("dev", "--app", f"data=http://127.0.0.1:{data_port}",
                                         "--app", f"ws=http://127.0.0.1:{ws_port}")
    agent = stack.start_agent(agent_token, region="big")
    return stack, proxy, agent


def _app(proxy, rest):
    return f"{proxy.http_url}/@{OWNER_USERNAME}/dev/apps/data/{rest}"


def test_one_gib_each_way_byte_exact(env):
    stack, proxy, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    want = _stream_sha256(GIB)
    r = requests.get(_app(proxy, f"down?n={GIB}"), headers=session, stream=True, timeout=600)
    assert r.status_code == 200, r.text
    h = hashlib.sha256()
    got = 0
    for chunk in r.iter_content(BLOCK):
        h.update(chunk)
        got += len(chunk)
    assert got == GIB and h.hexdigest() == want
    r = requests.post(_app(proxy, "up"), headers=session, data=_Upload(GIB), timeout=600)
    assert r.status_code == 200, r.text
    assert r.text == f"{GIB} {want}"
    # It went over the agent's tunnel to this proxy, not through the primary.
    assert "relay link" not in proxy.proc.stderr()


def test_ten_thousand_websocket_echoes_through_the_proxy(env):
    stack, proxy, _ = env
    s, head, _ = _ws_connect(stack, f"/@{OWNER_USERNAME}/dev/apps/ws/echo", proxy.http_url)
    assert head.startswith(b"HTTP/1.1 101"), head
    for i in range(10000):
        msg = f"message {i}".encode()
        s.sendall(_ws_frame(msg, masked=True))
        assert _ws_read(s) == (2, msg)
    s.close()


def test_thousands_of_requests_keep_the_tunnel(env):
    """Every app request is a stream on the agent's tunnel: 2,500 in a row (more than an
    HTTP/2 peer tolerates in resets) go through one tunnel, which never drops."""
    import http.client

    stack, proxy, agent = env
    conn = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=10)
    headers = {"Coder-Session-Token": stack.client.token()}
    conn.request("GET", f"/@{OWNER_USERNAME}/dev/apps/data/small?n=0", headers=headers)
    r = conn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    cookie = r.getheader("Set-Cookie").split(";", 1)[0]
    before = proxy.proc.stderr().count("tunnel closed")
    for _ in range(2500):
        conn.request("GET", f"/@{OWNER_USERNAME}/dev/apps/data/small?n=0", headers={"Cookie": cookie})
        r = conn.getresponse()
        assert r.status == 200
        assert r.read() == b""
    conn.close()
    assert proxy.proc.stderr().count("tunnel closed") == before
    assert "GOAWAY" not in proxy.proc.stderr() + agent.stderr()


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_does_not_grow_the_proxy(env):
    stack, proxy, _ = env
    pid = proxy.proc.pid
    before = _rss_kib(pid)
    sock = socket.create_connection(("127.0.0.1", proxy.http_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.sendall((f"GET /@{OWNER_USERNAME}/dev/apps/data/down?n={GIB} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{proxy.http_port}\r\n"
                  f"Coder-Session-Token: {stack.client.token()}\r\n\r\n").encode())
    try:
        # The app would send 1 GiB at once; nobody reads. Give it time to push.
        time.sleep(3)
        grown = _rss_kib(pid) - before
        print(f"proxy RSS grew {grown} KiB with a stalled reader")
        # Windows and buffers bound it (TUNNEL.md §4): far below what was offered.
        assert grown < 48 << 10, f"proxy RSS grew by {grown} KiB with a stalled reader"
        # Other users of the proxy are not held up by it.
        r = requests.get(_app(proxy, "down?n=1048576"),
                         headers={"Coder-Session-Token": stack.client.token()}, timeout=10)
        assert r.status_code == 200 and len(r.content) == BLOCK
        time.sleep(1)
        assert _rss_kib(pid) - before < 48 << 10
    finally:
        sock.close()


def test_a_restarted_proxy_gets_the_agent_back_within_two_seconds(env):
    stack, proxy, agent = env
    assert proxy.proc.stop() == 0
    proxy.start()  # same ports; ready once /healthz answers
    t0 = time.monotonic()

    def tunnel_back():
        log = proxy.proc.stderr().rsplit("===== start", 1)[-1]
        return "tunnel up" in log

    wait_for(tunnel_back, 2.0, 0.02, "the agent's tunnel back at the restarted proxy")
    took = time.monotonic() - t0
    r = requests.get(_app(proxy, "down?n=1048576"),
                     headers={"Coder-Session-Token": stack.client.token()}, timeout=10)
    assert r.status_code == 200 and len(r.content) == BLOCK
    assert "relay link" not in proxy.proc.stderr().rsplit("===== start", 1)[-1]
    print(f"tunnel back {took:.2f} s after the proxy was ready")
