"""Replays the seed document (shared/seed/000_c2a7f0fb7748c163.txt) with our binary.

The primary runs with the DEFAULT proxy health interval (1m): every status change below must
come from the "at once" checks (create, register, deregister) and from missed re-registers,
never from the periodic check.
"""

import json
import re
import time

import pytest

import harness
from harness import PROXY_TOKEN_RE, UUID_RE, wait_for

CREATE_HEADLINE = ('Workspace Proxy "newyork" created successfully. Save this token, it will '
                   'not be shown again.')
# The promise: the status is true within 15 s with default settings, as the user sees
# it through the CLI (the primary's worst case is 14 s after the proxy's last registration).
STATUS_DEADLINE = 15.0

PROXY_FIELDS = {"id", "name", "display_name", "icon_url", "healthy", "path_app_url",
                "wildcard_hostname", "derp_enabled", "derp_only", "status", "created_at",
                "updated_at", "deleted", "version"}


@pytest.fixture(scope="module")
def primary(mctx):
    # No CODER_PROXY_HEALTH_INTERVAL: the default (1m) is the point of this module.
    return mctx.primary().start()


@pytest.fixture(scope="module")
def owner(mctx, primary):
    c = mctx.client()
    c.login_owner(primary.url)
    return c


def test_primary_prints_listener(primary):
    assert f"Started HTTP listener at http://127.0.0.1:{primary.port}" in primary.proc.stdout()
    assert primary.db_path.exists(), "the store is SQLite at <CODER_CONFIG_DIR>/coder.db"


def _ls_rows(owner):
    r = owner.run("wsproxy", "ls")
    assert r.rc == 0, r
    header = harness.table_header(r.stdout)
    assert header == ["NAME", "URL", "PROXY STATUS"], r.stdout
    return harness.parse_table(r.stdout)


def _wait_ls(owner, name, status, url=None, timeout=STATUS_DEADLINE):
    last = {}

    def check():
        rows = _ls_rows(owner)
        last["rows"] = rows
        assert rows[0]["name"] == "primary", rows
        for row in rows:
            if row["name"] == name:
                return row["proxy status"] == status and (url is None or row["url"] == url)
        return False

    t0 = time.monotonic()
    try:
        wait_for(check, timeout, 0.2, f"`coder wsproxy ls` shows {name} {status}")
    except harness.WaitTimeout as e:
        raise harness.WaitTimeout(f"{e}\n  last table: {last.get('rows')}") from None
    return time.monotonic() - t0


@pytest.mark.slow
def test_seed_document(mctx, primary, owner, tmp_path):
    # --- Requirements: the CLI is authenticated as the Owner.
    assert harness.API_KEY_RE.match(owner.token())
    assert owner.url() == primary.url

    # --- Step 1: create the proxy, exactly as documented.
    r = owner.run("wsproxy", "create", "--name=newyork", '--display-name=USA East',
                  "--icon=/emojis/2194.png")
    assert r.rc == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) >= 5, r
    assert lines[0] == CREATE_HEADLINE
    m = re.fullmatch(r"Token: (\S+)", lines[1])
    assert m, lines[1]
    token = m.group(1)
    tm = PROXY_TOKEN_RE.match(token)
    assert tm, token
    proxy_id = tm.group(1)
    assert lines[2] == ""
    assert lines[3] == "Start the proxy by running:"
    assert lines[4] == (f"CODER_PROXY_SESSION_TOKEN={token} coder wsproxy server "
                        f"--primary-access-url {primary.url} --http-address=0.0.0.0:3001")

    # "To verify it was created": primary first and ok, newyork unregistered with no URL.
    rows = _ls_rows(owner)
    assert rows[0] == {"name": "primary", "url": primary.url, "proxy status": "ok"}
    ny = [row for row in rows if row["name"] == "newyork"]
    assert ny == [{"name": "newyork", "url": "", "proxy status": "unregistered"}], rows

    listed = {p["name"]: p for p in owner.ls_json()}
    assert listed["newyork"]["id"] == proxy_id
    assert listed["newyork"]["display_name"] == "USA East"
    assert listed["newyork"]["icon_url"] == "/emojis/2194.png"
    assert listed["newyork"]["healthy"] is False

    # --- Step 2: deploy with exactly the documented variables (+ Prometheus, Observability).
    proxy = mctx.wsproxy(primary.url, token, name="newyork", prometheus=True)
    assert set(proxy.env) == {
        "CODER_PRIMARY_ACCESS_URL", "CODER_PROXY_SESSION_TOKEN", "CODER_HTTP_ADDRESS",
        "CODER_TLS_ADDRESS", "CODER_ACCESS_URL", "CODER_WILDCARD_ACCESS_URL",
        "CODER_TLS_ENABLE", "CODER_TLS_CLIENT_AUTH", "CODER_TLS_CERT_FILE",
        "CODER_TLS_KEY_FILE", "SSL_CERT_FILE", "CODER_PROMETHEUS_ENABLE",
        "CODER_PROMETHEUS_ADDRESS"}
    proxy.start()
    _wait_ls(owner, "newyork", "ok", url=proxy.url, timeout=15)
    ny = {p["name"]: p for p in owner.ls_json()}["newyork"]
    assert ny["healthy"] is True
    assert ny["path_app_url"].rstrip("/") == proxy.url
    assert ny["wildcard_hostname"] == proxy.wildcard
    assert ny["status"]["report"] == {"errors": [], "warnings": []}

    # Observability: Prometheus on CODER_PROMETHEUS_ADDRESS, path /.
    def metrics_ready():
        text = proxy.metrics()
        return ("process_resident_memory_bytes" in text
                and "coderd_api_requests_processed_total" in text) and text

    text = wait_for(metrics_ready, 5, 0.2, "proxy metrics")
    rss = harness.metric_samples(text, "process_resident_memory_bytes")
    assert rss and rss[0][1] > 0
    for name in ("process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "process_virtual_memory_bytes"):
        v = harness.metric_samples(text, name)
        assert v and v[0][1] > 0, (name, v)
    start = harness.metric_samples(text, "process_start_time_seconds")[0][1]
    assert abs(start - time.time()) < 600, start  # seconds since the epoch, not since boot

    # --- "unreachable: the proxy went offline": kill -9, no deregistration.
    assert proxy.kill9() == -9
    took = _wait_ls(owner, "newyork", "unreachable")
    assert took <= STATUS_DEADLINE
    assert {p["name"]: p for p in owner.ls_json()}["newyork"]["healthy"] is False

    # Restart with the same variables -> ok again.
    proxy.start()
    _wait_ls(owner, "newyork", "ok", url=proxy.url, timeout=15)

    # Graceful stop: exits 0, deregisters, so the status is unreachable at once.
    assert proxy.stop() == 0, proxy.proc.tail()
    _wait_ls(owner, "newyork", "unreachable", timeout=3)

    # --- The same proxy configured from a YAML file ("via environment variables, a config
    # file, or cmd flags").
    r = mctx.run(["wsproxy", "server", "--write-config"], proxy.env)
    assert r.rc == 0, r
    yaml_text = r.stdout
    assert "externalWorkspaceProxy:" in yaml_text and "primaryAccessURL:" in yaml_text, yaml_text
    assert primary.url in yaml_text and f"127.0.0.1:{proxy.tls_port}" in yaml_text, yaml_text
    assert f'proxySessionToken: "{token}"' in yaml_text, yaml_text  # Coder's key for it
    cfg = tmp_path / "wsproxy.yaml"
    cfg.write_text(yaml_text)
    cfg.chmod(0o600)
    # Everything from the file, the token too; only the trust store stays in the environment.
    from_file = mctx.wsproxy(primary.url, token, name="newyork", http_port=proxy.http_port,
                             tls_port=proxy.tls_port, extra_args=["--config", cfg],
                             env_exact={"SSL_CERT_FILE": mctx.certs.ca})
    assert from_file.url == proxy.url
    from_file.start()
    _wait_ls(owner, "newyork", "ok", url=proxy.url, timeout=15)
    assert from_file.stop() == 0


def test_ls_output_formats(mctx, primary, owner):
    stack = harness.Stack(mctx, primary, owner)
    created, _ = stack.create_proxy("fmt-proxy", display_name="Format Test",
                                    icon="/emojis/1f5fa.png")

    # -o json: an array of WorkspaceProxy objects, primary first.
    data = owner.ls_json()
    assert data[0]["name"] == "primary"
    for p in data:
        assert PROXY_FIELDS <= set(p), sorted(p)
        assert UUID_RE.match(p["id"]), p["id"]
        assert set(p["status"]) >= {"status", "report", "checked_at"}, p["status"]
        assert isinstance(p["status"]["report"]["errors"], list)
        assert isinstance(p["status"]["report"]["warnings"], list)
        assert p["deleted"] is False
    prim = data[0]
    assert prim["healthy"] is True and prim["status"]["status"] == "ok"
    assert prim["path_app_url"].rstrip("/") == primary.url
    assert prim["wildcard_hostname"] == primary.wildcard
    fmt = {p["name"]: p for p in data}["fmt-proxy"]
    assert fmt["id"] == created["id"]
    assert fmt["display_name"] == "Format Test" and fmt["icon_url"] == "/emojis/1f5fa.png"
    assert fmt["status"]["status"] == "unregistered" and fmt["healthy"] is False
    assert fmt["path_app_url"] == "" and fmt["wildcard_hostname"] == ""
    assert fmt["derp_enabled"] is True and fmt["derp_only"] is False
    # The JSON of ls agrees with the API.
    api_fmt = stack.proxy("fmt-proxy")
    for k in ("id", "name", "display_name", "icon_url", "created_at", "deleted"):
        assert api_fmt[k] == fmt[k], k

    # -o text: "Workspace Proxies:" then "<i>: <name> <url> <status>".
    r = owner.run("wsproxy", "ls", "-o", "text")
    assert r.rc == 0, r
    rows = harness.parse_ls_text(r.stdout)
    assert rows[0]["name"] == "primary" and rows[0]["url"] == primary.url
    assert rows[0]["status"] == "ok"
    t = {row["name"]: row for row in rows}["fmt-proxy"]
    assert (t["url"], t["status"], t["errors"]) == ("", "unregistered", [])

    # -c picks and orders columns.
    r = owner.run("wsproxy", "ls", "-c", "name,proxy status")
    assert r.rc == 0, r
    assert harness.table_header(r.stdout) == ["NAME", "PROXY STATUS"]
    rows = harness.parse_table(r.stdout)
    assert rows[0] == {"name": "primary", "proxy status": "ok"}
    assert {"name": "fmt-proxy", "proxy status": "unregistered"} in rows

    # Unknown output format / column -> one-line error.
    for args in (("-o", "yaml"), ("-c", "name,bogus")):
        r = owner.run("wsproxy", "ls", *args)
        assert r.rc != 0, r
        assert len(r.err_lines) == 1, r

    # The `list` alias and the long command name work too.
    for cmd in (("wsproxy", "list", "-o", "json"), ("workspace-proxy", "ls", "-o", "json")):
        r = owner.run(*cmd)
        assert r.rc == 0, r
        assert [p["name"] for p in json.loads(r.stdout)][0] == "primary"
