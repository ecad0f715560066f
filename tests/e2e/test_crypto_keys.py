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
