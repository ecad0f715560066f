"""Crypto keys for proxies (CODER-COMPAT §2.5): made once by the primary, kept in its store,
handed only to a proxy that presents its token, and the same after a restart."""

import re

from harness import Api


def _keys(stack, token, feature):
    api = Api(stack.primary.url, None)
    return api.get("/api/v2/workspaceproxies/me/crypto-keys", params={"feature": feature},
                   headers={"Coder-External-Proxy-Token": token})


def test_crypto_keys(ctx):
    stack = ctx.stack()
    _, token = stack.create_proxy("keys")
    got = {}
    for feature, hexlen in (("workspace_apps_token", 128), ("workspace_apps_api_key", 64),
                            ("agent_tunnel", 128)):
        r = _keys(stack, token, feature)
        assert r.status_code == 200, r.text
        keys = r.json()["crypto_keys"]
        assert len(keys) == 1
        k = keys[0]
        assert k["feature"] == feature and k["sequence"] == 1
        assert re.fullmatch(f"[0-9a-f]{{{hexlen}}}", k["secret"]), k
        got[feature] = k["secret"]
    assert len(set(got.values())) == 3

    # Only for proxies, only known features.
    r = _keys(stack, "not-a-token", "workspace_apps_token")
    assert r.status_code == 401
    r = stack.api.get("/api/v2/workspaceproxies/me/crypto-keys",
                      params={"feature": "workspace_apps_token"})
    assert r.status_code == 401
    r = _keys(stack, token, "oidc_convert")
    assert r.status_code == 400 and r.json()["message"] == "Invalid feature: oidc_convert"

    # Kept across a restart: tokens signed before it still verify after.
    assert stack.primary.stop() == 0
    stack.primary.start()
    for feature, secret in got.items():
        keys = _keys(stack, token, feature).json()["crypto_keys"]
        assert [k["secret"] for k in keys] == [secret]
    # Never in the primary's logs.
    proc = stack.primary.proc
    log = proc.stderr_path.read_text() + proc.stdout_path.read_text()  # both runs
    assert "created workspace_apps_token key 1" in log
    for secret in got.values():
        assert secret not in log


def test_agent_regions_carry_tickets_for_healthy_proxies(ctx):
    import base64
    import hashlib
    import hmac
    import json
    import time

    from harness import wait_for

    stack = ctx.stack(health_interval="1s")
    created, ptoken = stack.create_proxy("ny")
    atoken = stack.create_workspace("dev")
    agent_api = Api(stack.primary.url, atoken)

    def regions():
        r = agent_api.get("/api/v2/workspaceagents/me/regions")
        assert r.status_code == 200, r.text
        return r.json()["regions"]

    # An unregistered proxy is not a place to tunnel to.
    regs = regions()
    assert [g["name"] for g in regs] == ["primary"]
    assert regs[0]["url"] == stack.primary.url and "tunnel_ticket" not in regs[0]

    proxy = stack.start_proxy(ptoken, name="ny").start()
    stack.wait_status("ny", "ok")
    regs = wait_for(lambda: len(regions()) == 2 and regions(), 5, 0.2, "proxy listed")
    ny = regs[1]
    assert ny["id"] == created["id"] and ny["url"] == proxy.url
    head, payload, sig = ny["tunnel_ticket"].split(".")
    dec = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    header = json.loads(dec(head))
    claims = json.loads(dec(payload))
    assert header["alg"] == "HS512"
    assert claims["aud"] == created["id"] and claims["iss"] == "coder"
    assert 0 < claims["exp"] - time.time() <= 600
    # It verifies with the agent_tunnel key the proxy can fetch, and only with it.
    keys = _keys(stack, ptoken, "agent_tunnel").json()["crypto_keys"]
    key = next(k for k in keys if str(k["sequence"]) == header["kid"])
    mac = hmac.new(bytes.fromhex(key["secret"]), f"{head}.{payload}".encode(),
                   hashlib.sha512).digest()
    assert mac == dec(sig)

    # A user's token is not an agent's.
    assert stack.api.get("/api/v2/workspaceagents/me/regions").status_code == 401


def test_issue_signed_app_token(ctx):
    import base64
    import hashlib
    import hmac
    import json
    import time

    stack = ctx.stack()
    _, ptoken = stack.create_proxy("ny")
    r = stack.client.run("create", "dev", "--app", "code=http://127.0.0.1:8080",
                         "--app", "pub=http://127.0.0.1:8081,subdomain,share=public")
    assert r.rc == 0, r
    proxy = Api(stack.primary.url, None)
    hdr = {"Coder-External-Proxy-Token": ptoken}

    def issue(method, slug, session):
        body = {"app_request": {"access_method": method, "base_path": "/",
                                "username_or_id": "admin", "workspace_name_or_id": "dev",
                                "agent_name_or_id": "main", "app_slug_or_port": slug},
                "path_app_base_url": "http://proxy", "app_hostname": "", "app_path": "/",
                "app_query": "", "session_token": session}
        return proxy.post("/api/v2/workspaceproxies/me/issue-signed-app-token", json=body,
                          headers=hdr)

    r = issue("path", "code", stack.client.token())
    assert r.status_code == 201, r.text
    tok = r.json()["signed_token_str"]
    head, payload, sig = tok.split(".")
    dec = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    claims = json.loads(dec(payload))
    assert claims["app_url"] == "http://127.0.0.1:8080"
    assert claims["request"]["app_slug_or_port"] == "code"
    assert 0 < claims["exp"] - time.time() <= 60
    kid = json.loads(dec(head))["kid"]
    keys = _keys(stack, ptoken, "workspace_apps_token").json()["crypto_keys"]
    key = next(k for k in keys if str(k["sequence"]) == kid)
    mac = hmac.new(bytes.fromhex(key["secret"]), f"{head}.{payload}".encode(),
                   hashlib.sha512).digest()
    assert mac == dec(sig)

    # Signed out: only a public subdomain app; a port is the owner's. Otherwise the user is
    # sent to auth-redirect with the app's URL at the proxy, which the proxy passes on.
    r = issue("path", "code", "")
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == (f"{stack.primary.url}/api/v2/applications/auth-redirect"
                                     "?redirect_uri=http%3A%2F%2Fproxy%2F")
    r = issue("subdomain", "pub", "")
    assert r.status_code == 201, r.text
    assert issue("path", "pub", "").status_code == 303  # path apps are never public
    assert issue("subdomain", "8080", stack.client.token()).status_code == 201
    assert issue("path", "nope", stack.client.token()).status_code == 404
    # Only proxies ask.
    r = stack.api.post("/api/v2/workspaceproxies/me/issue-signed-app-token", json={})
    assert r.status_code == 401
    r = proxy.post("/api/v2/workspaceproxies/me/issue-signed-app-token",
                   json={"app_request": {"access_method": "terminal"}}, headers=hdr)
    assert r.status_code == 400


def test_keys_rotate_and_proxies_follow(ctx):
    """With a 1 s rotation interval: new keys appear, the replaced ones stay readable for a
    while (deletes_at set), and a proxy verifies tokens signed with a key it has never seen by
    fetching it (an unknown kid), while a token from before the rotation still works."""
    import base64
    import json

    import requests

    from harness import OWNER_USERNAME, serve_app, wait_for
    from test_apps import AppHandler

    app = serve_app(AppHandler)
    port = next(app)
    try:
        stack = ctx.stack(extra_args=["--crypto-key-rotation-interval", "1s"])
        _, token = stack.create_proxy("rot")
        proxy = stack.start_proxy(token, name="rot", tls=False).start()
        agent_token = stack.create_workspace("dev", "--app", f"site=http://127.0.0.1:{port}")
        stack.start_agent(agent_token, region="rot")
        url = f"{proxy.http_url}/@{OWNER_USERNAME}/dev/apps/site/"
        session = {"Coder-Session-Token": stack.client.token()}

        def kid_of(resp):
            tok = resp.cookies["coder_signed_app_token"]
            head = tok.split(".")[0]
            return int(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]), tok

        r = requests.get(url, headers=session)
        assert r.status_code == 200, r.text
        kid1, tok1 = kid_of(r)

        def rotated():
            keys = _keys(stack, token, "workspace_apps_token").json()["crypto_keys"]
            return max(k["sequence"] for k in keys) > kid1 + 1 and keys

        keys = wait_for(rotated, 10, 0.2, "two rotations")
        old = next(k for k in keys if k["sequence"] == kid1)
        assert old["deletes_at"] != "0001-01-01T00:00:00Z"  # retired, still readable
        r = requests.get(url, headers=session)
        assert r.status_code == 200, r.text
        kid2, _ = kid_of(r)
        assert kid2 > kid1 + 1
        # The token from before the rotations still opens the app (within its minute).
        r = requests.get(url, cookies={"coder_signed_app_token": tok1})
        assert r.status_code == 200, r.text
        assert "rotated to workspace_apps_token key" in stack.primary.proc.stderr()
    finally:
        app.close()  # stops the app server
