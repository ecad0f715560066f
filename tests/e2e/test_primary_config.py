"""`coder server` configuration: errors, flags / environment / YAML, TLS, and the primary region.

A configuration error is exactly one non-empty line on stderr and a non-zero exit, before the
server listens or touches its store (CODER-COMPAT part 2 §2). The primary region's display
name and icon are stored in the deployment (§3: defaults "Default" and /emojis/1f3e1.png).
"""

import socket
import ssl

import pytest

import harness
from harness import strip_ansi, tls_client_context, wait_for

SCHEME = "access-url must include a scheme (e.g. 'http://' or 'https://)"
NO_LISTENER = "TLS is disabled. Enable with --tls-enable or specify a HTTP address"
DURATION = 'must be a duration such as "30s", "5m" or "1h30m"'
POSTGRES = ("--postgres-url: PostgreSQL is not supported by this build yet; unset it to use "
            "the embedded SQLite store")
DEFAULT_NAME = "Default"
DEFAULT_ICON = "/emojis/1f3e1.png"


def server(ctx, *args, env=None, timeout=20.0):
    """Runs `coder server ARGS` to completion (for the ones that must fail)."""
    cfg = ctx.dir / ctx.unique("cfg")
    return ctx.run(["server", *args], {"CODER_CONFIG_DIR": cfg, **(env or {})},
                   timeout=timeout), cfg


def config_error(r, needle):
    """A start-up error: exit != 0, exactly one non-empty stderr line, holding `needle`."""
    assert r.rc > 0, r
    assert r.err_lines == [f"error: {needle}"] or (
        len(r.err_lines) == 1 and needle in r.err_lines[0]), r
    assert "Started HTTP listener" not in r.stdout and "View the Web UI" not in r.stdout, r
    return r.err_lines[0]


def http_ok(url, **kw):
    try:
        r = harness.http_get(url + "/healthz", timeout=2, **kw)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return r.status_code == 200 and r.text.strip() == "OK"


def start_server(ctx, name, args=(), env=None, probe=None):
    """Starts `coder server` with exactly ARGS and ENV (no harness defaults) and waits until
    GET <probe>/healthz answers OK."""
    p = ctx.process(name, ["server", *args],
                    {"CODER_CONFIG_DIR": ctx.dir / f"{name}-config",
                     "SSL_CERT_FILE": ctx.certs.ca, **(env or {})})
    p.start()

    def up():
        if not p.running():
            raise harness.Abort(f"{name} exited with {p.returncode}:\n{p.tail(30)}")
        return http_ok(probe)

    wait_for(up, 15, 0.05, f"{name} GET {probe}/healthz")
    return p


def buildinfo(url):
    r = harness.http_get(url + "/api/v2/buildinfo")
    assert r.status_code == 200, r.text
    return r.json()


def primary_region(ctx, url, client_name):
    c = ctx.client(client_name)
    c.login_owner(url)
    regions = c.api().get("/api/v2/regions").json()["regions"]
    assert regions[0]["name"] == "primary", regions
    return regions[0]


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("url", ["127.0.0.1:3000", "example.com", "ftp://example.com"])
def test_access_url_without_scheme(ctx, how, url):
    port = harness.free_port()
    if how == "flag":
        r, cfg = server(ctx, "--access-url", url, "--http-address", f"127.0.0.1:{port}")
    else:
        r, cfg = server(ctx, env={"CODER_ACCESS_URL": url,
                                  "CODER_HTTP_ADDRESS": f"127.0.0.1:{port}"})
    config_error(r, SCHEME)
    assert not harness.port_is_listening(port)
    assert not (cfg / "coder.db").exists()


def test_tls_disabled_and_no_http_address(ctx):
    config_error(server(ctx, "--access-url", "http://127.0.0.1:1", "--http-address", "")[0],
                 NO_LISTENER)
    config_error(server(ctx, env={"CODER_ACCESS_URL": "http://127.0.0.1:1",
                                  "CODER_HTTP_ADDRESS": ""})[0], NO_LISTENER)


def test_bad_proxy_health_interval(ctx):
    base = ("--access-url", "http://127.0.0.1:1", "--http-address", "127.0.0.1:0")
    config_error(server(ctx, *base, "--proxy-health-interval", "bogus")[0],
                 f'invalid value "bogus" for flag --proxy-health-interval: {DURATION}')
    config_error(server(ctx, *base, env={"CODER_PROXY_HEALTH_INTERVAL": "5 minutes"})[0],
                 f'invalid value "5 minutes" for $CODER_PROXY_HEALTH_INTERVAL: {DURATION}')
    yaml = ctx.dir / "bad-interval.yaml"
    yaml.write_text("networking:\n  http:\n    proxyHealthInterval: soon\n")
    config_error(server(ctx, *base, "--config", yaml)[0],
                 f'invalid value "soon" for networking.http.proxyHealthInterval in config file '
                 f'"{yaml}": {DURATION}')
    for tiny in ("10ms", "0s"):
        config_error(server(ctx, *base, "--proxy-health-interval", tiny)[0],
                     "--proxy-health-interval must be at least 100ms")


@pytest.mark.parametrize("pattern,why", [
    ("foo.*.example.com", "hostname pattern must only contain an asterisk at the beginning"),
    ("https://*.example.com", "hostname pattern must not contain a scheme"),
    ("*", "hostname pattern must contain at least two labels/segments"),
    ("*.*.example.com", "hostname pattern must contain exactly one asterisk"),
])
def test_bad_wildcard_access_url(ctx, pattern, why):
    port = harness.free_port()
    r, _ = server(ctx, "--access-url", f"http://127.0.0.1:{port}", "--http-address",
                  f"127.0.0.1:{port}", "--wildcard-access-url", pattern)
    line = config_error(r, why)
    assert f'"{pattern}"' in line, line
    assert not harness.port_is_listening(port)


def _busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def test_address_already_in_use(ctx):
    # The listeners open first (as in Coder), so the error is the only line: no store is
    # created or migrated, and nothing is logged before it.
    busy, port = _busy_port()
    try:
        r, cfg = server(ctx, "--access-url", f"http://127.0.0.1:{port}", "--http-address",
                        f"127.0.0.1:{port}")
        config_error(r, f"listen 127.0.0.1:{port}: address already in use")
        assert not (cfg / "coder.db").exists()

        # The TLS listener: the HTTP one opened first and says so on stdout; stderr still has
        # the error alone.
        certs = ctx.certs
        r, cfg = server(ctx, "--access-url", f"https://127.0.0.1:{port}", "--http-address",
                        "127.0.0.1:0", "--tls-enable", "--tls-address", f"127.0.0.1:{port}",
                        "--tls-cert-file", certs.server_cert, "--tls-key-file",
                        certs.server_key)
        assert r.rc > 0, r
        assert r.err_lines == [f"error: listen 127.0.0.1:{port}: address already in use"], r
        assert not (cfg / "coder.db").exists()
    finally:
        busy.close()


def test_address_in_use_by_a_running_primary(ctx):
    # A second primary on the first one's address and config dir: one clear line, and the
    # first one keeps serving.
    first = ctx.primary().start()
    r = ctx.run(["server", "--access-url", first.url, "--http-address",
                 f"127.0.0.1:{first.port}"], {"CODER_CONFIG_DIR": first.config_dir})
    config_error(r, f"listen 127.0.0.1:{first.port}: address already in use")
    assert first.healthz_ok()


def test_postgres_url_is_not_supported(ctx):
    base = ("--access-url", "http://127.0.0.1:1", "--http-address", "127.0.0.1:0")
    r, cfg = server(ctx, *base, "--postgres-url", "postgres://coder@127.0.0.1/coder")
    config_error(r, POSTGRES)
    assert not (cfg / "coder.db").exists()
    config_error(server(ctx, *base,
                        env={"CODER_PG_CONNECTION_URL": "postgres://coder@127.0.0.1/coder"})[0],
                 POSTGRES)


def test_bad_config_file(ctx):
    missing = ctx.dir / "missing.yaml"
    config_error(server(ctx, "--config", missing)[0],
                 f'read config file "{missing}": No such file or directory')
    broken = ctx.dir / "broken.yaml"
    broken.write_text("networking: [\n")
    line = config_error(server(ctx, "--config", broken)[0], f'parse config file "{broken}"')
    assert "line 2" in line, line


# --------------------------------------------------------------------------------------------
# Flags, environment and YAML


def test_configured_from_the_environment(ctx):
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}"
    start_server(ctx, "envprimary", env={
        "CODER_ACCESS_URL": url, "CODER_HTTP_ADDRESS": f"127.0.0.1:{port}",
        "CODER_WILDCARD_ACCESS_URL": "*.env.localhost"}, probe=url)
    assert buildinfo(url)["dashboard_url"] == url
    # The primary's wildcard takes the access URL's port (CODER-COMPAT §3).
    assert primary_region(ctx, url, "envclient")["wildcard_hostname"] == \
        f"*.env.localhost:{port}"


def test_configured_from_a_yaml_file(ctx):
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}"
    yaml = ctx.dir / "server.yaml"
    yaml.write_text(f"""\
networking:
  accessURL: {url}
  wildcardAccessURL: "*.yaml.localhost:{port}"
  http:
    httpAddress: 127.0.0.1:{port}
    proxyHealthInterval: 300ms
""")
    p = start_server(ctx, "yamlprimary", ["--config", yaml], probe=url)
    assert buildinfo(url)["dashboard_url"] == url
    assert primary_region(ctx, url, "yamlclient")["wildcard_hostname"] == \
        f"*.yaml.localhost:{port}"

    # proxyHealthInterval took effect: a registered proxy is checked every 300 ms, where the
    # default would check it once a minute.
    api = ctx.client("yamlclient").api()
    web = ctx.fake_web_server()
    web.mode = "json-report"
    r = api.post("/api/v2/workspaceproxies", json={"name": "yamlproxy", "display_name": "Y",
                                                   "icon": "/emojis/1f5fa.png"})
    assert r.status_code == 201, r.text
    r = harness.http_request("POST", url + "/api/v2/workspaceproxies/me/register", json={
        "access_url": web.url, "replica_id": harness.new_uuid(), "derp_enabled": True,
        "hostname": "h", "version": "v"},
        headers={"Coder-External-Proxy-Token": r.json()["proxy_token"]})
    assert r.status_code == 201, r.text
    wait_for(lambda: len(web.requests_to("/healthz-report")) >= 4, 10, 0.1,
             "four health checks")
    assert p.running()

    # The same file named by $CODER_CONFIG_PATH (a second config dir, the same address).
    assert p.stop() == 0
    start_server(ctx, "yamlenv", env={"CODER_CONFIG_PATH": yaml}, probe=url)
    assert buildinfo(url)["dashboard_url"] == url


def test_flag_over_environment_over_yaml(ctx):
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}"
    yaml = ctx.dir / "layered.yaml"
    yaml.write_text(f"""\
networking:
  accessURL: http://yaml.example.com
  wildcardAccessURL: "*.yaml.localhost"
  http:
    httpAddress: 127.0.0.1:{port}
""")
    start_server(ctx, "layered", ["--config", yaml, "--access-url", url],
                 env={"CODER_ACCESS_URL": "http://env.example.com",
                      "CODER_WILDCARD_ACCESS_URL": "*.env.localhost"}, probe=url)
    assert buildinfo(url)["dashboard_url"] == url  # flag over environment and YAML
    region = primary_region(ctx, url, "layeredclient")
    assert region["wildcard_hostname"] == f"*.env.localhost:{port}"  # environment over YAML


# --------------------------------------------------------------------------------------------
# TLS on the primary


def _tls_primary(ctx, name, *extra):
    http_port, tls_port = harness.free_port(), harness.free_port()
    certs = ctx.certs
    start_server(ctx, name, ["--access-url", f"https://127.0.0.1:{tls_port}", "--http-address",
                             f"127.0.0.1:{http_port}", "--tls-enable", "--tls-address",
                             f"127.0.0.1:{tls_port}", "--tls-cert-file", certs.server_cert,
                             "--tls-key-file", certs.server_key, *extra],
                 probe=f"http://127.0.0.1:{http_port}")
    return tls_port


def _refused(port, tls_ctx):
    try:
        status, _, _ = harness.https_get_status(port, tls_ctx)
    except TimeoutError:
        pytest.fail("the primary hung instead of refusing the TLS connection")
    except harness.TLS_REFUSED:
        return True
    pytest.fail(f"expected the TLS connection to be refused, got HTTP {status}")


def _ok(port, tls_ctx):
    status, _, body = harness.https_get_status(port, tls_ctx)
    return (status, body) == (200, b"OK")


def test_tls_min_version_tls13(ctx):
    ca = ctx.certs.ca
    port = _tls_primary(ctx, "tls13primary", "--tls-min-version", "tls13")
    assert _refused(port, tls_client_context(ca, max_version=ssl.TLSVersion.TLSv1_2))
    assert _ok(port, tls_client_context(ca, min_version=ssl.TLSVersion.TLSv1_3))


def test_tls_default_min_version_accepts_tls12(ctx):
    port = _tls_primary(ctx, "tls12primary")
    assert _ok(port, tls_client_context(ctx.certs.ca, max_version=ssl.TLSVersion.TLSv1_2))


def test_tls_client_auth_require_and_verify(ctx):
    certs = ctx.certs
    port = _tls_primary(ctx, "mtlsprimary", "--tls-client-auth", "require-and-verify",
                        "--tls-client-ca-file", certs.ca)
    assert _refused(port, tls_client_context(certs.ca))  # no certificate
    assert _refused(port, tls_client_context(certs.ca, certs.other_client_cert,
                                             certs.other_client_key))  # another CA's
    assert _ok(port, tls_client_context(certs.ca, certs.client_cert, certs.client_key))


# --------------------------------------------------------------------------------------------
# The primary region and the proxy API


@pytest.fixture(scope="module")
def stack(mctx):
    return mctx.stack(health_interval="1s")


def _primary_everywhere(stack):
    """The primary as GET /workspaceproxies/primary, the proxy list and /regions show it."""
    one = stack.api.get("/api/v2/workspaceproxies/primary").json()
    listed = stack.proxies()[0]
    region = stack.api.get("/api/v2/regions").json()["regions"][0]
    assert one["name"] == listed["name"] == region["name"] == "primary"
    return one, listed, region


def test_primary_defaults(stack):
    for p in _primary_everywhere(stack):
        assert (p["display_name"], p["icon_url"]) == (DEFAULT_NAME, DEFAULT_ICON), p
        assert p["healthy"] is True and p["path_app_url"] == stack.primary.url, p
    by_id = stack.api.get(f"/api/v2/workspaceproxies/{stack.proxies()[0]['id']}").json()
    assert by_id["name"] == "primary" and by_id["display_name"] == DEFAULT_NAME


def test_primary_patch_is_stored_and_shown(stack):
    try:
        r = stack.api.patch("/api/v2/workspaceproxies/primary",
                            json={"display_name": "Home", "icon": "/emojis/1f3e0.png"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["proxy_token"] == "", body
        assert (body["proxy"]["name"], body["proxy"]["display_name"],
                body["proxy"]["icon_url"]) == ("primary", "Home", "/emojis/1f3e0.png"), body
        for p in _primary_everywhere(stack):
            assert (p["display_name"], p["icon_url"]) == ("Home", "/emojis/1f3e0.png"), p

        # One field alone keeps the other; the name "primary" may be sent unchanged.
        r = stack.api.patch("/api/v2/workspaceproxies/primary",
                            json={"name": "primary", "display_name": "Head office"})
        assert r.status_code == 200, r.text
        for p in _primary_everywhere(stack):
            assert (p["display_name"], p["icon_url"]) == ("Head office", "/emojis/1f3e0.png")
        r = stack.api.patch("/api/v2/workspaceproxies/primary",
                            json={"icon": "https://example.com/hq.png"})
        assert r.status_code == 200, r.text
        for p in _primary_everywhere(stack):
            assert (p["display_name"], p["icon_url"]) == ("Head office",
                                                          "https://example.com/hq.png")
        # The CLI shows it too.
        rows = [p for p in stack.client.ls_json() if p["name"] == "primary"]
        assert rows and rows[0]["display_name"] == "Head office", rows

        # Stored: it survives a restart.
        assert stack.primary.stop() == 0
        stack.primary.start()
        for p in _primary_everywhere(stack):
            assert (p["display_name"], p["icon_url"]) == ("Head office",
                                                          "https://example.com/hq.png")
    finally:
        r = stack.api.patch("/api/v2/workspaceproxies/primary",
                            json={"display_name": DEFAULT_NAME, "icon": DEFAULT_ICON})
        assert r.status_code == 200, r.text


def test_delete_answers_with_a_message(stack):
    proxy, _ = stack.create_proxy("doomed")
    r = stack.api.delete(f"/api/v2/workspaceproxies/{proxy['id']}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json() == {"message": "Proxy has been deleted!"}
    assert stack.api.get(f"/api/v2/workspaceproxies/{proxy['id']}").status_code == 404
    assert stack.proxy("doomed") is None
    regions = stack.api.get("/api/v2/regions").json()["regions"]
    assert "doomed" not in [x["name"] for x in regions]
    # By name, the same answer.
    stack.create_proxy("doomed")
    r = stack.api.delete("/api/v2/workspaceproxies/doomed")
    assert (r.status_code, r.json()) == (200, {"message": "Proxy has been deleted!"})


def _register(stack, token, **fields):
    body = {"access_url": f"http://127.0.0.1:{harness.free_port()}",
            "replica_id": harness.new_uuid(), "hostname": "h", "version": "v",
            "derp_enabled": True, **fields}
    return stack.primary.api().post("/api/v2/workspaceproxies/me/register", json=body,
                                    headers={"Coder-External-Proxy-Token": token})


def test_regions_leave_out_derp_only_proxies(stack):
    _, relay_token = stack.create_proxy("relayonly")
    _, full_token = stack.create_proxy("fullproxy")
    assert _register(stack, relay_token, derp_only=True).status_code == 201
    assert _register(stack, full_token).status_code == 201

    names = [x["name"] for x in stack.api.get("/api/v2/regions").json()["regions"]]
    assert "fullproxy" in names and "relayonly" not in names, names
    # The proxy list still has it, marked.
    relay = stack.proxy("relayonly")
    assert (relay["derp_enabled"], relay["derp_only"]) == (True, True), relay
    assert stack.proxy("fullproxy")["derp_only"] is False

    # DERP-only needs DERP.
    r = _register(stack, full_token, derp_enabled=False, derp_only=True)
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "DerpOnly cannot be true when DerpEnabled is false."
    assert stack.proxy("fullproxy")["derp_only"] is False

    # Registering again without derp_only brings it back.
    assert _register(stack, relay_token).status_code == 201
    names = [x["name"] for x in stack.api.get("/api/v2/regions").json()["regions"]]
    assert "relayonly" in names, names
