"""The proxy's own routes (CODER-COMPAT §5.2) on both listeners, and the primary's."""

import pytest

import harness
from harness import http_get


@pytest.fixture(scope="module")
def stack(mctx):
    return mctx.stack(health_interval="1s")


@pytest.fixture(scope="module")
def proxy(stack):
    _, token = stack.create_proxy("routes")
    p = stack.start_proxy(token, name="routes").start()
    stack.wait_status("routes", "ok")
    return p


def _bases(proxy):
    return [(proxy.https_url, proxy.ctx.certs.ca), (proxy.http_url, None)]


def _get(base, verify, path, **kw):
    return http_get(base + path, verify=verify, **kw)


def _build_version(stack):
    r = stack.primary.api().get("/api/v2/buildinfo")
    assert r.status_code == 200
    return r.json()["version"]


def test_healthz_on_both_listeners(proxy, stack):
    version = _build_version(stack)
    for base, verify in _bases(proxy):
        r = _get(base, verify, "/healthz")
        assert r.status_code == 200, (base, r.text)
        assert r.text == "OK"
        assert r.headers.get("X-Coder-Build-Version") == version


def test_healthz_report(proxy):
    for base, verify in _bases(proxy):
        r = _get(base, verify, "/healthz-report")
        assert r.status_code == 200, (base, r.text)
        assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
        assert r.json() == {"errors": [], "warnings": []}
        assert "X-Coder-Build-Version" in r.headers


def test_latency_check_headers(proxy):
    for base, verify in _bases(proxy):
        r = _get(base, verify, "/latency-check?cache_bust=abc123",
                 headers={"Origin": "http://example.com", "X-LATENCY-CHECK": "true"})
        assert r.status_code == 200, (base, r.text)
        assert r.text == "OK"
        assert r.headers.get("Timing-Allow-Origin") == "*"
        assert r.headers.get("Access-Control-Allow-Origin") == "*"
        assert r.headers.get("Access-Control-Allow-Headers") == "*"
        assert r.headers.get("Access-Control-Allow-Methods") == "*"
        assert r.headers.get("Access-Control-Allow-Credentials") == "false"
        assert "X-Coder-Build-Version" in r.headers


def test_latency_check_preflight_from_the_dashboard(proxy, stack):
    """The dashboard's latency check sends X-LATENCY-CHECK, so browsers ask first (OPTIONS):
    the dashboard's origin gets its answer, and the timed GET one Allow-Origin value."""
    dashboard = stack.primary.url
    ask = {"Origin": dashboard, "Access-Control-Request-Method": "GET",
           "Access-Control-Request-Headers": "x-latency-check"}
    for base, verify in _bases(proxy):
        r = harness.http_request("OPTIONS", base + "/latency-check", verify=verify, headers=ask)
        assert r.status_code == 200, (base, r.text)
        assert r.headers.get("Access-Control-Allow-Origin") == dashboard
        assert r.headers.get("Access-Control-Allow-Methods") == "GET"
        assert r.headers.get("Access-Control-Allow-Headers").lower() == "x-latency-check"
        r = _get(base, verify, "/latency-check", headers={"Origin": dashboard})
        assert r.status_code == 200
        assert r.raw.headers.getlist("Access-Control-Allow-Origin") == ["*"]
        # Another origin, or a header outside the list, gets no permission.
        for bad in ({**ask, "Origin": "http://evil.example.com"},
                    {**ask, "Access-Control-Request-Headers": "x-latency-check, authorization"},
                    {**ask, "Access-Control-Request-Method": "DELETE"}):
            r = harness.http_request("OPTIONS", base + "/latency-check", verify=verify,
                                     headers=bad)
            assert r.status_code == 200, (base, bad)
            assert "Access-Control-Allow-Origin" not in r.headers, (base, bad)


def test_buildinfo_says_workspace_proxy(proxy, stack):
    version = _build_version(stack)
    for base, verify in _bases(proxy):
        r = _get(base, verify, "/api/v2/buildinfo")
        assert r.status_code == 200, (base, r.text)
        assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
        b = r.json()
        assert b["workspace_proxy"] is True
        assert b["dashboard_url"].rstrip("/") == stack.primary.url
        assert b["version"] == version
        assert isinstance(b["external_url"], str) and b["external_url"]


def test_unknown_route_points_to_dashboard(proxy):
    for base, verify in _bases(proxy):
        for path in ("/", "/some/unknown/page"):
            r = _get(base, verify, path)
            assert r.status_code == 400, (base, path, r.status_code)
            assert r.headers["Content-Type"].split(";")[0].strip() == "text/html"
            assert "This page must be loaded from the dashboard" in r.text
            assert "X-Coder-Build-Version" in r.headers


def test_derp_is_a_json_error(proxy):
    for base, verify in _bases(proxy):
        r = _get(base, verify, "/derp")
        assert r.status_code == 400, (base, r.text)
        assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
        msg = r.json().get("message")
        assert isinstance(msg, str) and msg
        assert "X-Coder-Build-Version" in r.headers


def test_responses_carry_nosniff(proxy):
    r = _get(proxy.https_url, proxy.ctx.certs.ca, "/healthz")
    assert r.headers.get("X-Content-Type-Options") == "nosniff"


def test_bad_requests_to_proxy(proxy):
    # A header block over 64 KiB -> 431; a garbage request line -> 400; neither kills it.
    big = "a" * (70 * 1024)
    st, _, _ = harness.raw_http(proxy.http_port,
                                f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")
    assert st == 431
    st, _, _ = harness.raw_http(proxy.http_port, "NOT HTTP AT ALL\r\n\r\n")
    assert st == 400
    assert proxy.proc.running()
    assert _get(proxy.http_url, None, "/healthz").status_code == 200


def test_primary_routes(stack):
    api = stack.primary.api()
    r = api.get("/api/v2/buildinfo")
    assert r.status_code == 200
    b = r.json()
    assert b["workspace_proxy"] is False
    assert isinstance(b["version"], str) and b["version"]
    assert r.headers.get("X-Coder-Build-Version") == b["version"]
    r = api.get("/healthz")
    assert (r.status_code, r.text) == (200, "OK")
    r = api.get("/latency-check")
    assert r.status_code == 200
    assert r.headers.get("Timing-Allow-Origin") == "*"
    assert r.headers.get("Access-Control-Allow-Origin") == "*"


def test_regions_lists_primary_first(stack, proxy):
    r = stack.api.get("/api/v2/regions")
    assert r.status_code == 200, r.text
    regions = r.json()["regions"]
    assert regions[0]["name"] == "primary"
    assert regions[0]["healthy"] is True
    assert regions[0]["path_app_url"].rstrip("/") == stack.primary.url
    ours = {x["name"]: x for x in regions}["routes"]
    assert ours["healthy"] is True and ours["path_app_url"].rstrip("/") == proxy.url


def test_derp_only_proxy_serves_no_browser_traffic(stack):
    """--derp-only: app routes answer Coder's DERP-only dashboard page (400), the proxy's own
    routes still work, and /regions (the dashboard's region picker) leaves it out."""
    _, token = stack.create_proxy("derponly")
    p = stack.start_proxy(token, name="derponly", extra_args=["--derp-only"]).start()
    stack.wait_status("derponly", "ok")
    for base, verify in _bases(p):
        r = _get(base, verify, f"/@{harness.OWNER_USERNAME}/ws/apps/site/")
        assert r.status_code == 400, (base, r.status_code, r.text[:200])
        assert r.headers["Content-Type"].split(";")[0].strip() == "text/html"
        assert "This workspace proxy is DERP-only and cannot be used for browser" in r.text
        assert stack.primary.url in r.text  # the link back to the dashboard
        assert _get(base, verify, "/healthz").text == "OK"
    assert stack.proxy("derponly")["derp_only"] is True
    names = [x["name"] for x in stack.api.get("/api/v2/regions").json()["regions"]]
    assert "derponly" not in names and "primary" in names
    assert p.stop() == 0
