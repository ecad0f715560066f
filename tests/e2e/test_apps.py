"""Path apps at the primary (issue 3, part 4): /@user/workspace[.agent]/apps/slug/ relayed to the
app through the agent's tunnel, streaming both ways, with Coder's credentials kept away from the
app and forwarding headers set by us."""

import hashlib
import http.server
import json
import time
from urllib.parse import quote

import pytest
import requests

from harness import Api, OWNER_USERNAME, free_port, serve_app, wait_for

BIG = 32 << 20


def _blob(n):
    return hashlib.shake_256(b"coder").digest(n)


class AppHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Vary", "Origin, Accept-Encoding, Access-Control-Request-Method")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/cut"):
            # Promises more than it sends, then closes: the response is cut off.
            self.send_response(200)
            if self.path.startswith("/cutchunked"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"a\r\n0123456789\r\n")
            else:
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/early"):
            self.send_response_only(103)
            self.send_header("Link", "</style.css>; rel=preload")
            self.end_headers()
        if self.path.startswith("/big"):
            self._send(200, _blob(BIG), "application/octet-stream")
        elif self.path.startswith("/headers"):
            self._send(200, json.dumps({"path": self.path, "peer_port": self.client_address[1],
                                        "headers": dict(self.headers.items())}).encode())
        elif self.path.startswith("/status/"):
            self._send(int(self.path.split("/")[2]), b"", "text/plain")
        elif self.path.startswith("/then-close"):
            # A keep-alive answer, then the app drops the connection on its own.
            self._send(200, b"bye", "text/plain")
            self.wfile.flush()
            time.sleep(0.05)
            self.close_connection = True
        else:
            self._send(200, b"hello from the app", "text/plain")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        left = n
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        self._send(200, json.dumps({"received": n - left, "sha256": h.hexdigest(),
                                    "expect": self.headers.get("Expect")}).encode())


@pytest.fixture(scope="module")
def app_port():
    yield from serve_app(AppHandler)


@pytest.fixture(scope="module")
def env(mctx, app_port):
    stack = mctx.stack()
    token = stack.create_workspace("dev", "--app", f"site=http://127.0.0.1:{app_port}",
                                   "--app", f"gone=http://127.0.0.1:{free_port()}")
    agent = stack.start_agent(token, region=None)

    def connected():
        ws = stack.api.get("/api/v2/users/me/workspace/dev").json()
        return ws["latest_build"]["resources"][0]["agents"][0]["status"] == "connected"

    wait_for(connected, 10, 0.1, "agent connected")
    s = requests.Session()
    s.headers["Coder-Session-Token"] = stack.client.token()
    return stack, agent, s


def _url(stack, rest, ws="dev"):
    return f"{stack.primary.url}/@{OWNER_USERNAME}/{ws}/apps/{rest}"


def test_get_and_slash_redirect(env):
    stack, _, s = env
    r = s.get(_url(stack, "site"), allow_redirects=False)
    assert r.status_code == 307
    assert r.headers["Location"] == f"/@{OWNER_USERNAME}/dev/apps/site/"
    r = s.get(_url(stack, "site/"))
    assert r.status_code == 200 and r.text == "hello from the app"
    # The agent may be named.
    r = s.get(f"{stack.primary.url}/@{OWNER_USERNAME}/dev.main/apps/site/")
    assert r.status_code == 200


def test_status_lines_keep_their_reason(env):
    # A status the relay passes on has the reason phrase Go's servers give it, as in Coder.
    stack, _, s = env
    for code, reason in ((206, "Partial Content"), (416, "Requested Range Not Satisfiable"),
                         (418, "I'm a teapot"), (299, "status code 299")):
        r = s.get(_url(stack, f"site/status/{code}"))
        assert (r.status_code, r.reason) == (code, reason)


def test_download_and_upload_byte_exact(env):
    stack, _, s = env
    r = s.get(_url(stack, "site/big"), stream=True)
    assert r.status_code == 200
    h = hashlib.sha256()
    for chunk in r.iter_content(1 << 20):
        h.update(chunk)
    assert h.hexdigest() == hashlib.sha256(_blob(BIG)).hexdigest()
    body = _blob(BIG)
    r = s.post(_url(stack, "site/upload"), data=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": BIG, "sha256": hashlib.sha256(body).hexdigest(),
                        "expect": None}


def test_what_the_app_sees(env):
    stack, _, s = env
    r = s.get(_url(stack, "site/headers?x=1"),
              headers={"X-Forwarded-Host": "evil.example.com", "X-FORWARDED-FOR": "6.6.6.6",
                       "x-Forwarded-Proto": "gopher", "Forwarded": "for=6.6.6.6",
                       "X-Real-IP": "6.6.6.6",
                       "Cookie": f"coder_session_token={stack.client.token()}; theirs=1"})
    assert r.status_code == 200, r.text
    seen = r.json()
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/headers?x=1"  # the app prefix is stripped
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-host"] != "evil.example.com"
    assert h["x-forwarded-proto"] == "http"
    assert "forwarded" not in h and "x-real-ip" not in h
    assert "6.6.6.6" not in json.dumps(seen)
    assert h["cookie"] == "theirs=1"
    assert "coder-session-token" not in h
    assert stack.client.token() not in json.dumps(seen)
    # The app's CORS headers do not reach the browser, nor what CORS varies on.
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.headers["Vary"] == "Accept-Encoding"


def test_access_is_the_owners(env):
    stack, _, _ = env
    anon = requests.get(_url(stack, "site/"))
    assert anon.status_code == 401
    r = stack.api.post("/api/v2/users", json={"email": "m@example.com", "username": "member",
                                              "password": "SomeSecure-Pass1!",
                                              "login_type": "password"})
    assert r.status_code == 201, r.text
    login = Api(stack.primary.url, None).post(
        "/api/v2/users/login", json={"email": "m@example.com", "password": "SomeSecure-Pass1!"})
    member = requests.get(_url(stack, "site/"),
                          headers={"Coder-Session-Token": login.json()["session_token"]})
    assert member.status_code == 404
    s = requests.Session()
    s.headers["Coder-Session-Token"] = stack.client.token()
    assert s.get(_url(stack, "nope/")).status_code == 404
    assert s.get(_url(stack, "site/", ws="nows")).status_code == 404
    r = s.get(f"{stack.primary.url}/@me/dev/apps/site/")
    assert r.status_code == 404
    assert r.json()["message"] == ("Workspace apps must be accessed with the full username, "
                                   "not @me.")


def test_app_down_and_agent_down(env):
    stack, agent, s = env
    r = s.get(_url(stack, "gone/"))
    assert r.status_code == 502
    assert "connection refused" in r.json()["detail"]
    assert agent.stop() == 0
    r = s.get(_url(stack, "site/"))
    assert r.status_code == 502
    assert r.json()["message"] == "Agent is not connected."
    # A browser gets a page instead.
    r = s.get(_url(stack, "site/"), headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 502
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<h1>Agent is not connected.</h1>" in r.text
    agent.start()


# ---- subdomain apps and port URLs on the primary's wildcard ------------------------------


def test_subdomain_apps_and_sharing(env, app_port):
    stack, _, s = env
    token = stack.create_workspace(
        "sub", "--agent", "main",
        "--app", f"own=http://127.0.0.1:{app_port},subdomain",
        "--app", f"pub=http://127.0.0.1:{app_port},subdomain,share=public",
        "--app", f"team=http://127.0.0.1:{app_port},subdomain,share=authenticated")
    agent = stack.start_agent(token, "agent-sub")
    port = stack.primary.url.rsplit(":", 1)[1]

    def get(sub, session=None, path="/headers"):
        headers = {"Host": f"{sub}.primary.localhost:{port}"}
        if session:
            headers["Coder-Session-Token"] = session
        return requests.get(f"{stack.primary.url}{path}", headers=headers, timeout=10,
                            allow_redirects=False)

    owner_token = stack.client.token()
    r = get(f"own--main--sub--{OWNER_USERNAME}", owner_token)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/headers"  # the app owns the whole host: no prefix
    assert get(f"own--sub--{OWNER_USERNAME}", owner_token).status_code == 200  # agent optional

    login = Api(stack.primary.url, None).post(
        "/api/v2/users/login", json={"email": "m@example.com", "password": "SomeSecure-Pass1!"})
    member = login.json()["session_token"] if login.status_code == 201 else None
    if member is None:
        r = stack.api.post("/api/v2/users", json={"email": "m@example.com",
                                                  "username": "member",
                                                  "password": "SomeSecure-Pass1!",
                                                  "login_type": "password"})
        assert r.status_code == 201, r.text
        member = Api(stack.primary.url, None).post(
            "/api/v2/users/login",
            json={"email": "m@example.com", "password": "SomeSecure-Pass1!"}).json()[
                "session_token"]

    # owner: only the owner; authenticated: anyone signed in; public: anyone.
    assert get(f"own--sub--{OWNER_USERNAME}", member).status_code == 404
    # Signed out: to auth-redirect, with this very URL to come back to (CODER-COMPAT §5.3).
    for app in ("own", "team"):
        r = get(f"{app}--sub--{OWNER_USERNAME}", path="/x?y=1")
        assert r.status_code == 303, r.text
        back = f"http://{app}--sub--{OWNER_USERNAME}.primary.localhost:{port}/x?y=1"
        assert r.headers["Location"] == (f"{stack.primary.url}/api/v2/applications/auth-redirect"
                                         f"?redirect_uri={quote(back, safe='')}")
    assert get(f"team--sub--{OWNER_USERNAME}", member).status_code == 200
    assert get(f"pub--sub--{OWNER_USERNAME}").status_code == 200
    # A path app is the owner's even when the app is shared as a subdomain app.
    r = requests.get(_url(stack, "pub/", ws="sub"), headers={"Coder-Session-Token": member})
    assert r.status_code == 404

    # A port URL reaches that port in the workspace (the owner's).
    r = get(f"{app_port}--main--sub--{OWNER_USERNAME}", owner_token, path="/")
    assert r.status_code == 200 and r.text == "hello from the app"
    # "s": TLS to the port, which this plain HTTP app does not speak.
    r = get(f"{app_port}s--main--sub--{OWNER_USERNAME}", owner_token)
    assert r.status_code == 502 and "TLS with the application failed" in r.json()["detail"]
    # Not an app host at all: the primary's own routes.
    r = requests.get(f"{stack.primary.url}/healthz")
    assert r.status_code == 200
    assert agent.stop() == 0


# ---- WebSocket through the relay -----------------------------------------------------------

import base64  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        d = sock.recv(n - len(out))
        if not d:
            raise ConnectionError("closed")
        out.extend(d)
    return bytes(out)


def _ws_read(sock):
    b0, b1 = _recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    mask = _recv_exact(sock, 4) if b1 & 0x80 else None
    data = _recv_exact(sock, n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, data


def _ws_frame(data, masked):
    head = bytes([0x82])
    n = len(data)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + data
    mask = os.urandom(4)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data))


class WsHandler(http.server.BaseHTTPRequestHandler):
    """Echoes binary WebSocket messages; /refuse answers the upgrade with a plain 200."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        if self.path.startswith("/refuse") or not key:
            body = b"no websocket here"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        if self.path.startswith("/badaccept"):
            accept = base64.b64encode(b"x" * 20).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        while True:
            try:
                op, data = _ws_read(sock)
            except ConnectionError:
                return
            if op == 8:
                return
            sock.sendall(_ws_frame(data, masked=False))


@pytest.fixture(scope="module")
def ws_port():
    yield from serve_app(WsHandler)


def _ws_connect(stack, path, base_url=None):
    import socket as _socket

    host, port = "127.0.0.1", int((base_url or stack.primary.url).rsplit(":", 1)[1])
    s = _socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Coder-Session-Token: {stack.client.token()}\r\n\r\n")
    s.sendall(req.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    return s, head, key


def test_websocket_echo_through_the_relay(env, ws_port):
    stack, _, _ = env
    token = stack.create_workspace("wsws", "--app", f"ws=http://127.0.0.1:{ws_port}")
    agent = stack.start_agent(token, "agent-ws")
    s, head, key = _ws_connect(stack, f"/@{OWNER_USERNAME}/wsws/apps/ws/echo")
    assert head.startswith(b"HTTP/1.1 101"), head
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
    assert b"Sec-WebSocket-Accept: " + accept in head
    for i in range(10000):
        msg = f"message {i}".encode()
        s.sendall(_ws_frame(msg, masked=True))
        op, data = _ws_read(s)
        assert (op, data) == (2, msg)
    big = os.urandom(1 << 20)
    s.sendall(_ws_frame(big, masked=True))
    assert _ws_read(s) == (2, big)
    s.close()

    # A 101 that does not answer this key is no switch either (SECURITY.md #3).
    s, head, _ = _ws_connect(stack, f"/@{OWNER_USERNAME}/wsws/apps/ws/badaccept")
    assert head.startswith(b"HTTP/1.1 502"), head
    s.close()
    # An app that answers the upgrade with 200 does not get the connection switched.
    s, head, _ = _ws_connect(stack, f"/@{OWNER_USERNAME}/wsws/apps/ws/refuse")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Upgrade:" not in head
    rest = s.recv(100)
    assert rest.startswith(b"no websocket here")
    s.close()
    assert agent.stop() == 0


def test_cut_off_responses_stay_cut_off(env):
    """An app (or agent) dying mid-body must not look like a complete download."""
    stack, _, s = env
    import urllib3

    for path in ("site/cut", "site/cutchunked"):
        r = s.get(_url(stack, path), timeout=10, stream=True)
        assert r.status_code == 200
        with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
            r.raw.read()
    # Interim answers (103 Early Hints) leave nothing behind on the final response.
    r = s.get(_url(stack, "site/early"))
    assert r.status_code == 200 and r.text == "hello from the app"
    assert "Link" not in r.headers


def test_keep_alive_through_the_relay(env):
    """Requests without a body leave the client's connection open for the next one (and the
    next request's bytes never land on a finished exchange)."""
    import http.client

    stack, _, _ = env
    port = int(stack.primary.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Coder-Session-Token": stack.client.token()}
    conn.request("GET", f"/@{OWNER_USERNAME}/dev/apps/site/", headers=headers)
    first = conn.sock
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"hello from the app"
    assert r.getheader("Connection") != "close"
    for i in range(20):
        conn.request("GET", f"/@{OWNER_USERNAME}/dev/apps/site/headers?i={i}", headers=headers)
        r = conn.getresponse()
        assert r.status == 200, r.read()
        assert json.loads(r.read())["path"] == f"/headers?i={i}"
    assert conn.sock is first  # one connection all along
    conn.close()


def _expect_continue(port, head, body, timeout=5.0):
    """Sends a request head with "Expect: 100-continue", waits for the interim answer before
    any body byte (as curl does for uploads over 1 MiB), then sends the body. Returns (what came
    before the body was sent, the rest of the answer)."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head.encode())
        first = sock.recv(65536)  # a server that owes 100 Continue and sends nothing times out
        if first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n") and first.endswith(b"\r\n\r\n"):
            sock.sendall(body)
        rest = b""
        while b"\r\n\r\n" not in rest or not rest.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return first, rest
    finally:
        sock.close()


def test_expect_100_continue(env):
    """A client that sends "Expect: 100-continue" gets "100 Continue" before it sends the body
    (curl otherwise waits a second per upload), for app uploads and for the API; the app is not
    asked again; and a request refused up front gets its answer instead, without the 100."""
    stack, _, _ = env
    port = int(stack.primary.url.rsplit(":", 1)[1])
    body = _blob(3 << 20)
    first, rest = _expect_continue(
        port, f"POST /@{OWNER_USERNAME}/dev/apps/site/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Coder-Session-Token: {stack.client.token()}\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n", body)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first[:200]
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:300]
    got = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert got["received"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["expect"] is None  # answered by us, not forwarded
    # The API reads whole bodies before the handler: 100 Continue right after the head.
    login = json.dumps({"email": "nobody@example.com", "password": "wrong-password"}).encode()
    first, rest = _expect_continue(
        port, "POST /api/v2/users/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(login)}\r\n"
        "Expect: 100-continue\r\n\r\n", login)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first[:200]
    assert rest.startswith(b"HTTP/1.1 401 "), rest[:300]
    # Signed out: the final answer comes at once and no 100 Continue precedes it.
    first, _ = _expect_continue(
        port, f"POST /@{OWNER_USERNAME}/dev/apps/site/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n", body)
    assert not first.startswith(b"HTTP/1.1 100"), first[:200]
    assert first.split(b" ", 2)[1] in (b"303", b"401"), first[:200]
