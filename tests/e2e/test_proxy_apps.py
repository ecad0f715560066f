"""Apps through workspace proxies (issue 3, parts 4-6): a proxy checks signed app tokens itself
(after the first request of a session the primary hears nothing), hands a browser's session over
between domains with auth-redirect, and reaches the agent over its own tunnel, or through the
primary when the agent holds none to it."""

import base64
import hashlib
import hmac
import json
import re
import time
from urllib.parse import quote, urlsplit

import pytest
import requests

from harness import Api, OWNER_USERNAME, free_port, serve_app, wait_for
from test_port_forward import echo_port  # noqa: F401 - the TCP echo server (fixture)
from test_apps import (BIG, WS_GUID, _blob, _ws_connect, _ws_frame, _ws_read,  # noqa: F401
                       app_port, ws_port)  # the app servers (fixtures)

ISSUE = "/api/v2/workspaceproxies/me/issue-signed-app-token"


def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _sign(secret_hex, kid, claims):
    head = _b64(json.dumps({"alg": "HS512", "kid": kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(bytes.fromhex(secret_hex), f"{head}.{body}".encode(), hashlib.sha512).digest()
    return f"{head}.{body}.{_b64(mac)}"


@pytest.fixture(scope="module")
def https_port(mctx):
    from test_apps import AppHandler

    yield from serve_app(AppHandler, mctx.certs)


@pytest.fixture(scope="module")
def wss_port(mctx):
    from test_apps import WsHandler

    yield from serve_app(WsHandler, mctx.certs)


@pytest.fixture(scope="module")
def env(mctx, app_port, ws_port, https_port, wss_port):  # noqa: F811
    stack = mctx.stack(prometheus=True)
    _, ny_token = stack.create_proxy("ny")
    ny = stack.start_proxy(ny_token, name="ny", tls=False,
                           extra_env={"CODER_PROXY_APP_STATS_INTERVAL": "300ms"})
    ny.start()
    # "la" announces an access URL nobody listens on: the agent cannot reach it, so requests
    # there go through the relay link to the primary.
    _, la_token = stack.create_proxy("la")
    la = stack.start_proxy(la_token, name="la", tls=False,
                           access_url=f"http://127.0.0.1:{free_port()}",
                           extra_env={"CODER_PROXY_TRUSTED_HEADERS": "X-Forwarded-For",
                                      "CODER_PROXY_TRUSTED_ORIGINS": "127.0.0.0/8"})
    la.start()
    stack.wait_status("ny", "ok")
    token = stack.create_workspace("dev", "--app", f"site=http://127.0.0.1:{app_port}",
                                   "--app", f"sub=http://127.0.0.1:{app_port},subdomain",
                                   "--app", f"pub=http://127.0.0.1:{app_port},subdomain,share=public",
                                   "--app", f"ws=http://127.0.0.1:{ws_port}",
                                   "--app", f"secure=https://127.0.0.1:{https_port}",
                                   "--app", f"wss=https://127.0.0.1:{wss_port}",
                                   "--app", f"based=http://127.0.0.1:{app_port}/headers/")
    agent = stack.start_agent(token, region="ny")
    return stack, ny, la, agent


def issued(stack):
    """How many signed app tokens the primary has issued."""
    n = 0
    for line in stack.primary.metrics().splitlines():
        if line.startswith("coderd_api_requests_processed_total") and ISSUE in line:
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def path_url(proxy, rest="", slug="site"):
    return f"{proxy.http_url}/@{OWNER_USERNAME}/dev/apps/{slug}/{rest}"


def sub_get(proxy, sub, path="/", headers=None, cookies=None):
    host = f"{sub}.{proxy.name}.localhost:{proxy.http_port}"
    h = {"Host": host, **(headers or {})}
    return requests.get(f"{proxy.http_url}{path}", headers=h, cookies=cookies,
                        allow_redirects=False, timeout=10)


def token_cookie(r):
    m = re.search(r"coder_signed_app_token=([^;]+); Path=([^;]+);", r.headers.get("Set-Cookie", ""))
    assert m, r.headers
    return m.group(1), m.group(2)


def test_path_app_at_a_proxy_asks_the_primary_once(env):
    stack, ny, _, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    before = issued(stack)
    r = requests.get(path_url(ny), headers=session, allow_redirects=False)
    assert r.status_code == 200, r.text
    assert r.text == "hello from the app"
    tok, path = token_cookie(r)
    assert path == f"/@{OWNER_USERNAME}/dev/apps/site/"
    assert issued(stack) == before + 1
    # With the token cookie alone (no session), the proxy decides by itself: no primary call.
    for _ in range(20):
        r = requests.get(path_url(ny, "headers"), cookies={"coder_signed_app_token": tok},
                         allow_redirects=False)
        assert r.status_code == 200, r.text
    assert issued(stack) == before + 1
    seen = r.json()["headers"]
    assert "coder_signed_app_token" not in json.dumps(seen)  # Coder's cookies stay here
    # The slash redirect stays on the proxy, path-only.
    r = requests.get(path_url(ny).rstrip("/"), headers=session, allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == f"/@{OWNER_USERNAME}/dev/apps/site/"


def test_secure_auth_cookie_at_a_proxy(env):
    """App cookies from a plain-HTTP proxy are Secure only when --secure-auth-cookie says so (a
    TLS-terminating load balancer in front), as at the primary."""
    stack, ny, _, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    r = requests.get(path_url(ny), headers=session, allow_redirects=False)
    assert r.status_code == 200, r.text
    assert "Secure" not in r.headers["Set-Cookie"], r.headers["Set-Cookie"]
    _, token = stack.create_proxy("behind-lb")
    lb = stack.start_proxy(token, name="behind-lb", tls=False,
                           extra_env={"CODER_SECURE_AUTH_COOKIE": "true"}).start()
    stack.wait_status("behind-lb", "ok")
    r = requests.get(path_url(lb), headers=session, allow_redirects=False)
    assert r.status_code == 200, r.text
    assert "coder_signed_app_token=" in r.headers["Set-Cookie"]
    assert "; Secure" in r.headers["Set-Cookie"], r.headers["Set-Cookie"]
    assert lb.stop() == 0


def test_bytes_both_ways_through_the_proxy_tunnel_and_the_relay_link(env):
    stack, ny, la, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    want = hashlib.sha256(_blob(BIG)).hexdigest()
    for proxy in (ny, la):
        r = requests.get(path_url(proxy, "big"), headers=session, stream=True)
        assert r.status_code == 200, r.text
        h = hashlib.sha256()
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
        assert h.hexdigest() == want, proxy.name
        r = requests.post(path_url(proxy, "upload"), headers=session, data=_blob(BIG))
        assert r.status_code == 200, r.text
        assert r.json() == {"received": BIG, "sha256": want, "expect": None}
    # la has no tunnel from the agent: it went through the primary.
    assert "relay link to the primary up" in la.proc.stderr()
    assert "relay link" not in ny.proc.stderr()


def test_browserless_auth_flow_for_a_subdomain_app(env):
    stack, ny, _, _ = env
    sub = f"sub--dev--{OWNER_USERNAME}"
    host = f"{sub}.ny.localhost:{ny.http_port}"
    # 1. Signed out: the primary (through the proxy) sends the user to auth-redirect.
    r = sub_get(ny, sub, "/headers?x=1")
    assert r.status_code == 303, r.text
    back = f"http://{host}/headers?x=1"
    assert r.headers["Location"] == (f"{stack.primary.url}/api/v2/applications/auth-redirect"
                                     f"?redirect_uri={quote(back, safe='')}")
    # 2. Signed in at the primary: back to the app with an encrypted key.
    r = requests.get(r.headers["Location"], allow_redirects=False,
                     headers={"Coder-Session-Token": stack.client.token()})
    assert r.status_code == 303, r.text
    loc = urlsplit(r.headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == f"http://{host}/headers"
    assert loc.query.startswith("x=1&coder_application_connect_api_key_35e783=")
    # 3. The proxy turns it into the wildcard's session cookie, and drops it from the URL.
    r = sub_get(ny, sub, f"{loc.path}?{loc.query}")
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/headers?x=1"
    m = re.match(r"(coder_subdomain_app_session_token_[0-9a-f]{32})=([^;]+); Path=/; "
                 r"Domain=\.ny\.localhost; HttpOnly; SameSite=Lax", r.headers["Set-Cookie"])
    assert m, r.headers["Set-Cookie"]
    name, key = m.group(1), m.group(2)
    assert name == "coder_subdomain_app_session_token_" + hashlib.sha256(
        b"*.ny.localhost").hexdigest()[:32]
    # 4. With the cookie: the app, and a signed token for the next minute.
    before = issued(stack)
    r = sub_get(ny, sub, "/headers?x=1", cookies={name: key})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/headers?x=1"
    tok, path = token_cookie(r)
    assert path == "/"
    r = sub_get(ny, sub, "/", cookies={"coder_signed_app_token": tok})
    assert r.status_code == 200 and r.text == "hello from the app"
    assert issued(stack) == before + 1
    # The handed-over key opens apps only: the API refuses it, and so does port forwarding
    # through a proxy (which asks the primary for a terminal token with it).
    r = requests.get(f"{stack.primary.url}/api/v2/users/me", headers={"Coder-Session-Token": key})
    assert r.status_code == 403, r.text
    agent_id = stack.api.get("/api/v2/users/me/workspace/dev").json()[
        "latest_build"]["resources"][0]["agents"][0]["id"]
    r = requests.get(f"{ny.http_url}/api/v2/workspaceagents/{agent_id}/port-forward?port=80",
                     headers={"Connection": "Upgrade", "Upgrade": "coder-tcp",
                              "Coder-Session-Token": key})
    assert r.status_code == 403, r.text
    # A public app needs nobody.
    r = sub_get(ny, f"pub--dev--{OWNER_USERNAME}", "/")
    assert r.status_code == 200 and r.text == "hello from the app"


def _keys(stack, proxy_token, feature):
    r = Api(stack.primary.url, None).get(
        f"/api/v2/workspaceproxies/me/crypto-keys?feature={feature}",
        headers={"Coder-External-Proxy-Token": proxy_token})
    assert r.status_code == 200, r.text
    return r.json()["crypto_keys"]


def test_tokens_that_must_not_open_the_app(env):
    stack, ny, _, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    r = requests.get(path_url(ny), headers=session, allow_redirects=False)
    good, _ = token_cookie(r)
    head, payload, _sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    kid = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    # The proxies can read the key (they verify with it); the test plays a thief who has it.
    tok = stack.api.get("/api/v2/workspaceproxies").json()
    assert tok  # the owner lists proxies; keys come only with a proxy token, below
    _, thief_token = stack.create_proxy("thief")
    secret = next(k["secret"] for k in _keys(stack, thief_token, "workspace_apps_token")
                  if str(k["sequence"]) == kid)

    def refused(token, url=None):
        r = requests.get(url or path_url(ny), cookies={"coder_signed_app_token": token},
                         allow_redirects=False)
        # No session: the proxy asks the primary, which sends the user to sign in.
        assert r.status_code == 303, (r.status_code, r.text)
        assert "/api/v2/applications/auth-redirect" in r.headers["Location"]

    refused(_sign("00" * 64, kid, claims))  # forged: another key
    refused(good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"))  # tampered
    refused(_sign(secret, kid, {**claims, "exp": int(time.time()) - 5}))  # expired
    other_app = {**claims, "request": {**claims["request"], "app_slug_or_port": "other"}}
    refused(_sign(secret, kid, other_app))  # for another app
    other_user = {**claims, "request": {**claims["request"], "username_or_id": "member"}}
    refused(_sign(secret, kid, other_user))  # for someone else's workspace
    # And the real one for this app is no key to another app's door.
    refused(good, path_url(ny, slug="sub"))
    # A token the proxy verified (and remembers) stops working when it expires.
    short = _sign(secret, kid, {**claims, "exp": int(time.time()) + 2})
    for _ in range(3):
        r = requests.get(path_url(ny), cookies={"coder_signed_app_token": short},
                         allow_redirects=False)
        assert r.status_code == 200, r.text
    time.sleep(3.1)
    refused(short)


def test_what_the_app_sees_at_a_proxy(env):
    stack, ny, _, _ = env
    r = requests.get(path_url(ny, "headers"),
                     headers={"Coder-Session-Token": stack.client.token(),
                              "X-Forwarded-Host": "evil.example.com",
                              "X-Forwarded-For": "6.6.6.6"})
    assert r.status_code == 200, r.text
    h = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-host"] == f"127.0.0.1:{ny.http_port}"
    assert "coder-session-token" not in h
    # la trusts X-Forwarded-For from loopback (--proxy-trusted-*): the client it names is what
    # the app sees; an address that is not one is ignored.
    stack_, _, la, _ = env
    for sent, seen in (("203.0.113.7, 127.0.0.1", "203.0.113.7"), ("evil", "127.0.0.1")):
        r = requests.get(path_url(la, "headers"),
                         headers={"Coder-Session-Token": stack.client.token(),
                                  "X-Forwarded-For": sent})
        assert r.status_code == 200, r.text
        h = {k.lower(): v for k, v in r.json()["headers"].items()}
        assert h["x-forwarded-for"] == seen


def test_redirect_targets_cannot_leave(env):
    stack, ny, _, _ = env
    s = {"Coder-Session-Token": stack.client.token()}
    base = f"{stack.primary.url}/api/v2/applications/auth-redirect?redirect_uri="
    for bad in ("//evil.example.com/x", "http://evil.example.com/", "/relative",
                f"http://user@{ny.http_url[7:]}/", f"{stack.primary.url}/"):
        r = requests.get(base + quote(bad, safe=""), headers=s, allow_redirects=False)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["message"] == "Invalid redirect_uri."
    # The hand-over's redirect is built from the request path: "//evil" stays on this host.
    sub = f"sub--dev--{OWNER_USERNAME}"
    r = requests.get(base + quote(f"http://{sub}.ny.localhost:{ny.http_port}//evil.example.com/",
                                  safe=""), headers=s, allow_redirects=False)
    assert r.status_code == 303, r.text
    loc = urlsplit(r.headers["Location"])
    r = sub_get(ny, sub, f"{loc.path}?{loc.query}")
    assert r.status_code == 303
    assert r.headers["Location"] == "/evil.example.com/"
    # A backslash (read as "/" by browsers) cannot turn the way back into "//evil" either.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", ny.http_port, timeout=10)
    conn.request("GET", f"/\\evil.example.com/a\\b?{loc.query}",
                 headers={"Host": f"{sub}.ny.localhost:{ny.http_port}"})
    resp = conn.getresponse()
    assert resp.status == 303
    assert resp.getheader("Location") == "/evil.example.com/a%5Cb"
    conn.close()
    # A garbled key is a clear 400, not a cookie.
    r = sub_get(ny, sub, "/?coder_application_connect_api_key_35e783=garbage")
    assert r.status_code == 400 and "Set-Cookie" not in r.headers


def test_websocket_to_an_https_app(env):
    stack, ny, la, _ = env
    for base in (stack.primary.url, ny.http_url, la.http_url):
        s, head, _ = _ws_connect(stack, f"/@{OWNER_USERNAME}/dev/apps/wss/echo", base)
        assert head.startswith(b"HTTP/1.1 101"), (base, head)
        for i in range(300):
            msg = f"over tls {i}".encode() * (1 + i % 50)
            s.sendall(_ws_frame(msg, masked=True))
            assert _ws_read(s) == (2, msg)
        big = hashlib.shake_256(b"wss").digest(1 << 20)
        s.sendall(_ws_frame(big, masked=True))
        assert _ws_read(s) == (2, big)
        s.close()


def test_websocket_at_each_proxy(env):
    stack, ny, la, _ = env
    for proxy in (ny, la):
        s, head, key = _ws_connect(stack, f"/@{OWNER_USERNAME}/dev/apps/ws/echo", proxy.http_url)
        assert head.startswith(b"HTTP/1.1 101"), (proxy.name, head)
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
        assert b"Sec-WebSocket-Accept: " + accept in head
        for i in range(1000):
            msg = f"{proxy.name} message {i}".encode()
            s.sendall(_ws_frame(msg, masked=True))
            assert _ws_read(s) == (2, msg)
        s.close()
        # An app answering the upgrade with 200 does not get the connection switched.
        s, head, _ = _ws_connect(stack, f"/@{OWNER_USERNAME}/dev/apps/ws/refuse", proxy.http_url)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"Upgrade:" not in head
        assert s.recv(100).startswith(b"no websocket here")
        s.close()


def test_agent_gone_at_a_proxy(env):
    stack, ny, la, agent = env
    session = {"Coder-Session-Token": stack.client.token()}
    assert agent.stop() == 0
    for proxy in (ny, la):
        r = requests.get(path_url(proxy), headers=session)
        assert r.status_code == 502, (proxy.name, r.text)
    agent.start()
    wait_for(lambda: requests.get(path_url(ny), headers=session).status_code == 200, 20, 0.2,
             "app back at ny")


def _port_forward(stack, name, *extra):
    import socket

    local = free_port()
    p = stack.ctx.process(f"pf-{name}", ["port-forward", "dev", "--tcp",
                                         f"{local}:{stack.echo_port}", "-v", *extra],
                          stack.client.env_extra())
    p.start()
    wait_for(lambda: "Ready!" in p.stderr(), 15, 0.1, "port-forward ready")
    blob = hashlib.shake_256(name.encode()).digest(1 << 20)
    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
        for _ in range(3):  # three connections' worth of bytes on one
            s.sendall(blob)
            got = bytearray()
            while len(got) < len(blob):
                d = s.recv(1 << 16)
                assert d, "closed early"
                got.extend(d)
            assert bytes(got) == blob
    # A second connection: the proxy remembers the grant (no second primary call).
    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
        s.sendall(b"again")
        assert s.recv(5) == b"again"
    return p


@pytest.fixture(scope="module")
def echo(env, echo_port):  # noqa: F811
    env[0].echo_port = echo_port
    return echo_port


def test_port_forward_through_a_chosen_proxy(env, echo):
    stack, ny, la, _ = env
    before = issued(stack)
    p = _port_forward(stack, "ny", "--proxy", "ny")
    assert f"forwarding through {ny.url}" in p.stderr()
    assert issued(stack) == before + 1  # two connections, one token
    assert p.stop() == 0
    # "la" holds no tunnel from the agent: the bytes go through the primary's relay link. It is
    # not healthy either (its access URL is dead), so --proxy refuses it by name.
    r = stack.client.run("port-forward", "dev", "--tcp", f"{free_port()}:{echo}", "--proxy", "la")
    assert r.rc != 0 and r.stderr.strip().splitlines()[-1] == (
        'error: proxy "la" is not healthy; pick another with --proxy, or leave it out to use '
        'the fastest healthy region')
    r = stack.client.run("port-forward", "dev", "--tcp", f"{free_port()}:{echo}", "--proxy", "xx")
    assert r.rc != 0 and "proxy \"xx\" not found" in r.stderr
    # Without --proxy: every healthy region was timed, and one was picked.
    p = _port_forward(stack, "auto")
    err = p.stderr()
    assert "region primary (" in err and "region ny (" in err and "region la" not in err
    assert p.stop() == 0


def test_port_forward_at_a_proxy_is_the_owners(env, echo):
    stack, ny, _, _ = env
    agent_id = stack.api.get("/api/v2/users/me/workspace/dev").json()[
        "latest_build"]["resources"][0]["agents"][0]["id"]
    url = f"{ny.http_url}/api/v2/workspaceagents/{agent_id}/port-forward?port={echo}"
    up = {"Connection": "Upgrade", "Upgrade": "coder-tcp"}
    r = requests.get(url, headers=up, allow_redirects=False)
    assert r.status_code == 401, r.text  # signed out
    r = requests.get(url, headers={**up, "Coder-Session-Token": "bad-token"})
    assert r.status_code == 401, r.text
    r = requests.get(url.replace(f"port={echo}", "port=3"),
                     headers={**up, "Coder-Session-Token": stack.client.token()})
    assert r.status_code == 400 and r.json()["message"] == "Invalid port."
    r = requests.get(url, headers={"Coder-Session-Token": stack.client.token()})
    assert r.status_code == 400 and r.json()["message"] == "Expected an upgrade to coder-tcp."
    # Someone else's session: not found, as at the primary.
    r = stack.api.post("/api/v2/users", json={"email": "pf@example.com", "username": "pfmember",
                                              "password": "SomeSecure-Pass1!",
                                              "login_type": "password"})
    assert r.status_code == 201, r.text
    member = Api(stack.primary.url, None).post(
        "/api/v2/users/login",
        json={"email": "pf@example.com", "password": "SomeSecure-Pass1!"}).json()["session_token"]
    r = requests.get(url, headers={**up, "Coder-Session-Token": member})
    assert r.status_code == 404, r.text
    # A grant is for one session and one agent: the member's grant for their own agent (not
    # connected: 502 after the token) opens nothing else.
    r = requests.post(f"{stack.primary.url}/api/v2/users/me/workspaces",
                      headers={"Coder-Session-Token": member}, json={"name": "mine"})
    assert r.status_code == 201, r.text
    mine = r.json()["latest_build"]["resources"][0]["agents"][0]["id"]
    r = requests.get(url.replace(agent_id, mine), headers={**up, "Coder-Session-Token": member})
    assert r.status_code == 502, r.text
    r = requests.get(url, headers={**up, "Coder-Session-Token": member})
    assert r.status_code == 404, r.text


def test_port_forward_through_the_relay_link(env, echo):
    import socket

    stack, _, la, _ = env
    agent_id = stack.api.get("/api/v2/users/me/workspace/dev").json()[
        "latest_build"]["resources"][0]["agents"][0]["id"]
    with socket.create_connection(("127.0.0.1", la.http_port), timeout=10) as s:
        s.sendall((f"GET /api/v2/workspaceagents/{agent_id}/port-forward?port={echo} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{la.http_port}\r\nConnection: Upgrade\r\n"
                   f"Upgrade: coder-tcp\r\nCoder-Session-Token: {stack.client.token()}\r\n\r\n")
                  .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            assert d, head
            head += d
        assert head.startswith(b"HTTP/1.1 101"), head
        blob = hashlib.shake_256(b"relay").digest(4 << 20)
        got = bytearray()
        s.sendall(blob[: 1 << 20])
        while len(got) < (1 << 20):
            got.extend(s.recv(1 << 16))
        assert bytes(got) == blob[: 1 << 20]


def test_app_stats_reach_the_primary(env):
    import sqlite3

    stack, ny, _, _ = env
    ws = stack.api.get("/api/v2/users/me/workspace/dev").json()
    db = sqlite3.connect(f"file:{stack.primary.config_dir}/coder.db?mode=ro", uri=True)

    def requests_seen():
        row = db.execute("SELECT COALESCE(SUM(requests), 0), COUNT(*) FROM workspace_app_stats "
                         "WHERE workspace_id = ? AND access_method = 'path' AND "
                         "slug_or_port = 'site'", (ws["id"],)).fetchone()
        return row

    before, _ = requests_seen()
    session = {"Coder-Session-Token": stack.client.token()}
    for _ in range(5):
        assert requests.get(path_url(ny), headers=session).status_code == 200
    wait_for(lambda: requests_seen()[0] >= before + 5, 10, 0.1, "app stats reported")
    got, rows = requests_seen()
    assert got == before + 5  # each request counted once, however many reports
    # Requests within a minute share a session row.
    time.sleep(0.8)
    assert requests_seen() == (got, rows)
    after = stack.api.get("/api/v2/users/me/workspace/dev").json()
    assert after["last_used_at"] >= ws["last_used_at"]
    # The primary refuses garbage with one clear answer and stores nothing.
    _, token = stack.create_proxy("statsbad")
    r = Api(stack.primary.url, None).post(
        "/api/v2/workspaceproxies/me/app-stats", headers={"Coder-External-Proxy-Token": token},
        json={"stats": [{"user_id": "nope"}]})
    assert r.status_code == 400 and r.json()["message"] == "Invalid app stats."
    assert requests_seen() == (got, rows)
    db.close()


def test_the_handoff_with_curl_and_a_cookie_jar(env, tmp_path):
    """The whole browser flow with a real client following redirects: curl with a cookie jar
    that holds only the primary's session cookie (as a browser signed in at the dashboard)
    opens a subdomain app on a proxy's wildcard, resolved with --resolve."""
    import subprocess

    stack, ny, _, _ = env
    sub = f"sub--dev--{OWNER_USERNAME}.ny.localhost"
    jar = tmp_path / "jar"
    # A Netscape cookie file: the dashboard session, for the primary's host only.
    jar.write_text("# Netscape HTTP Cookie File\n"
                   f"127.0.0.1\tFALSE\t/\tFALSE\t0\tcoder_session_token\t{stack.client.token()}\n")
    url = f"http://{sub}:{ny.http_port}/headers?from=curl"
    r = subprocess.run(["curl", "-sS", "-L", "--max-redirs", "5", "-b", str(jar), "-c", str(jar),
                        "--resolve", f"{sub}:{ny.http_port}:127.0.0.1", "-w",
                        "\\n%{http_code} %{num_redirects} %{url_effective}", url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    code, redirects, effective = tail.split(" ")
    assert code == "200", r.stdout
    assert redirects == "3"  # to auth-redirect, back with the key, to the clean URL
    assert effective == url
    assert json.loads(body)["path"] == "/headers?from=curl"
    cookies = jar.read_text()
    assert ".ny.localhost\tTRUE\t/\tFALSE\t0\tcoder_subdomain_app_session_token_" in cookies
    assert "coder_signed_app_token" in cookies
    # The app never saw a Coder credential.
    assert "coder_" not in json.dumps(json.loads(body)["headers"]).lower()


def test_https_apps_at_every_region(env, https_port):
    stack, ny, la, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    for base in (stack.primary.url, ny.http_url, la.http_url):
        r = requests.get(f"{base}/@{OWNER_USERNAME}/dev/apps/secure/headers?tls=1",
                         headers=session)
        assert r.status_code == 200, (base, r.text)
        assert r.json()["path"] == "/headers?tls=1"
        r = requests.post(f"{base}/@{OWNER_USERNAME}/dev/apps/secure/upload", headers=session,
                          data=_blob(4 << 20))
        assert r.status_code == 200, (base, r.text)
        assert r.json()["sha256"] == hashlib.sha256(_blob(4 << 20)).hexdigest()
    # An "s" port URL speaks TLS to the port; at a proxy's wildcard too.
    for proxy in (ny,):
        r = sub_get(proxy, f"{https_port}s--main--dev--{OWNER_USERNAME}", "/", headers=session)
        assert r.status_code == 200 and r.text == "hello from the app", r.text
    # TLS to a port that does not speak it is a clear 502.
    r = sub_get(ny, f"{ny.http_port}s--main--dev--{OWNER_USERNAME}", "/", headers=session)
    assert r.status_code == 502, r.text


def test_an_app_url_with_a_path(env):
    """An app at http://host:port/headers/ gets /headers/<rest>, at every region."""
    stack, ny, la, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    for base in (stack.primary.url, ny.http_url, la.http_url):
        r = requests.get(f"{base}/@{OWNER_USERNAME}/dev/apps/based/x?y=1", headers=session)
        assert r.status_code == 200, (base, r.text)
        assert r.json()["path"] == "/headers/x?y=1"


def test_upstream_connections_are_reused(env):
    """Requests to an app reuse the agent's connection to it (keep-alive upstream), and an app
    that drops an idle connection costs nothing but a fresh one."""
    stack, ny, la, _ = env
    session = {"Coder-Session-Token": stack.client.token()}
    for proxy in (ny, la):
        s = requests.Session()
        s.headers.update(session)
        ports = set()
        for _ in range(20):
            r = s.get(path_url(proxy, "headers"))
            assert r.status_code == 200, r.text
            ports.add(r.json()["peer_port"])
        assert len(ports) <= 2, (proxy.name, ports)  # not one connection per request
        r = s.get(path_url(proxy, "then-close"))
        assert r.status_code == 200 and r.text == "bye"
        time.sleep(0.3)  # the app has closed that connection by now
        for _ in range(5):
            r = s.get(path_url(proxy, "headers"))
            assert r.status_code == 200, r.text
