"""HTTP/2 from clients (issue 3, part 4): a client that chooses h2 with ALPN on a region's TLS
listener gets HTTP/2 for everything (routes, the API, apps relayed to the agent), streamed and
multiplexed, with real curl as the client; WebSockets stay on HTTP/1.1."""

import hashlib
import subprocess

import pytest

from harness import OWNER_USERNAME
from test_apps import BIG, _blob, app_port  # noqa: F401 - the app server (fixture)


@pytest.fixture(scope="module")
def env(mctx, app_port, tmp_path_factory):  # noqa: F811
    stack = mctx.stack()
    _, token = stack.create_proxy("h2")
    proxy = stack.start_proxy(token, name="h2").start()  # TLS and HTTP listeners
    stack.wait_status("h2", "ok")
    agent_token = stack.create_workspace("dev", "--app", f"site=http://127.0.0.1:{app_port}")
    stack.start_agent(agent_token, region="h2", extra_env={"SSL_CERT_FILE": str(mctx.certs.ca)})
    return stack, proxy, tmp_path_factory.mktemp("h2")


def curl(stack, *args, http2=True, token=True):
    cmd = ["curl", "-sS", "--cacert", str(stack.ctx.certs.ca), "--http2" if http2 else "--http1.1"]
    if token:
        cmd += ["-H", f"Coder-Session-Token: {stack.client.token()}"]
    r = subprocess.run(cmd + list(args), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_routes_and_apps_over_http2(env):
    stack, proxy, _ = env
    out = curl(stack, "-w", "\n%{http_version} %{http_code}", f"{proxy.https_url}/healthz",
               token=False).decode()
    assert out == "OK\n2 200"
    out = curl(stack, "-w", "\n%{http_version} %{http_code}", "-o", "/dev/null",
               f"{proxy.https_url}/nope", token=False).decode()
    assert out.strip() == "2 400"  # the dashboard page
    app = f"{proxy.https_url}/@{OWNER_USERNAME}/dev/apps/site/"
    out = curl(stack, "-w", "\n%{http_version} %{http_code}", app).decode()
    assert out == "hello from the app\n2 200"
    # Headers a browser sends over HTTP/2 reach the app as HTTP/1.1 ones: Host from
    # :authority, split cookie fields joined, no Coder credentials.
    out = curl(stack, "-H", "Cookie: a=1", "-H", "Cookie: b=2", app + "headers").decode()
    import json
    seen = json.loads(out)
    h = {k.lower(): v for k, v in seen["headers"].items()}
    assert h["cookie"] == "a=1; b=2"
    assert h["x-forwarded-host"] == f"127.0.0.1:{proxy.tls_port}"
    assert "coder-session-token" not in h


def test_bulk_both_ways_and_multiplexed(env):
    stack, proxy, tmp = env
    app = f"{proxy.https_url}/@{OWNER_USERNAME}/dev/apps/site/"
    got = curl(stack, app + "big")
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(_blob(BIG)).hexdigest()
    body = tmp / "up"
    body.write_bytes(_blob(BIG))
    out = curl(stack, "--data-binary", f"@{body}", "-H", "Content-Type: application/octet-stream",
               app + "upload")
    import json
    assert json.loads(out) == {"received": BIG, "sha256": hashlib.sha256(_blob(BIG)).hexdigest(),
                               "expect": None}
    # Twenty requests on one connection at once.
    outs = [tmp / f"o{i}" for i in range(20)]
    args = ["--parallel", "--parallel-max", "20", "-w", "%{http_version} %{http_code}\n"]
    for o in outs:
        args += ["-o", str(o), app + "headers"]
    w = curl(stack, *args).decode().split("\n")
    assert [x for x in w if x] == ["2 200"] * 20
    assert all(o.read_bytes().startswith(b'{"path": "/headers"') for o in outs)


def test_http1_still_served_and_chosen_by_alpn(env):
    stack, proxy, _ = env
    out = curl(stack, "-w", "\n%{http_version}", f"{proxy.https_url}/healthz", http2=False,
               token=False).decode()
    assert out == "OK\n1.1"


def test_a_client_that_gives_up_mid_download(env):
    """curl aborts a slow download (RST_STREAM / close): the relay lets go, the proxy goes on."""
    stack, proxy, _ = env
    app = f"{proxy.https_url}/@{OWNER_USERNAME}/dev/apps/site/"
    r = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(stack.ctx.certs.ca),
                        "-H", f"Coder-Session-Token: {stack.client.token()}",
                        "--limit-rate", "512K", "--max-time", "1", "-o", "/dev/null", app + "big"],
                       capture_output=True, timeout=30)
    assert r.returncode == 28, r.stderr  # operation timed out: curl gave up
    out = curl(stack, "-w", "\n%{http_version} %{http_code}", app).decode()
    assert out == "hello from the app\n2 200"


def test_the_primary_api_over_http2(ctx, tmp_path):
    """Buffered request bodies (the API) over HTTP/2, with the body limit."""
    stack = ctx.stack(tls=True)
    body = tmp_path / "login.json"
    body.write_text('{"email": "nobody@example.com", "password": "x"}')
    out = curl(stack, "-w", "\n%{http_version} %{http_code}", "-H",
               "Content-Type: application/json", "--data-binary", f"@{body}",
               f"{stack.primary.url}/api/v2/users/login", token=False).decode()
    assert out.endswith("\n2 401") and "Incorrect email or password." in out
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    out = curl(stack, "-w", "\n%{http_version} %{http_code}", "--data-binary", f"@{big}",
               f"{stack.primary.url}/api/v2/users/login", token=False).decode()
    assert out.endswith("\n2 413")
    out = curl(stack, "-w", "\n%{http_version} %{http_code}",
               f"{stack.primary.url}/api/v2/users/me").decode()
    assert out.endswith("\n2 200") and '"username"' in out
