"""TLS on the proxy (min version, client auth modes, HSTS) and outbound trust to the primary."""

import ssl

import pytest

import harness
from harness import https_get_status, strip_ansi, tls_client_context


@pytest.fixture(scope="module")
def stack(mctx):
    return mctx.stack(health_interval="1s")


def _start(stack, name, extra_args=(), **kw):
    """Create and start a proxy; readiness through the plain-HTTP listener (client-auth modes
    may refuse our readiness probe on TLS)."""
    _, token = stack.create_proxy(name)
    return stack.start_proxy(token, name=name, extra_args=[str(a) for a in extra_args],
                             ready="http", **kw).start()


def _assert_refused(port, ctx):
    try:
        status, _, _ = https_get_status(port, ctx)
    except TimeoutError:
        pytest.fail("the server hung instead of refusing the TLS connection")
    except harness.TLS_REFUSED:
        return
    pytest.fail(f"expected the TLS connection to be refused, got HTTP {status}")


def _assert_ok(port, ctx):
    status, _, body = https_get_status(port, ctx)
    assert (status, body) == (200, b"OK")


def test_tls_min_version(stack):
    certs = stack.ctx.certs
    tls12_only = tls_client_context(certs.ca, max_version=ssl.TLSVersion.TLSv1_2)
    tls13 = tls_client_context(certs.ca, min_version=ssl.TLSVersion.TLSv1_3)

    p = _start(stack, "tls13", ["--tls-min-version", "tls13"])
    _assert_refused(p.tls_port, tls12_only)
    _assert_ok(p.tls_port, tls13)

    # Default minimum is tls12: both accepted. No HSTS unless configured.
    d = _start(stack, "tlsdefault")
    _assert_ok(d.tls_port, tls12_only)
    _assert_ok(d.tls_port, tls13)
    _, headers, _ = https_get_status(d.tls_port, tls13)
    assert "strict-transport-security" not in headers


# mode -> accepted? for (no client cert, cert from our CA, cert from another CA)
CLIENT_AUTH = {
    "none": (True, True, True),
    "request": (True, True, True),
    "require-any": (False, True, True),
    "verify-if-given": (True, True, False),
    "require-and-verify": (False, True, False),
}


@pytest.mark.parametrize("mode", list(CLIENT_AUTH))
def test_tls_client_auth_modes(stack, mode):
    certs = stack.ctx.certs
    # The seed's CODER_TLS_CLIENT_AUTH=none stays in the environment: the flag wins.
    p = _start(stack, f"mtls-{mode}",
               ["--tls-client-auth", mode, "--tls-client-ca-file", certs.ca])
    clients = (
        tls_client_context(certs.ca),
        tls_client_context(certs.ca, certs.client_cert, certs.client_key),
        tls_client_context(certs.ca, certs.other_client_cert, certs.other_client_key),
    )
    for ctx, accepted in zip(clients, CLIENT_AUTH[mode]):
        if accepted:
            _assert_ok(p.tls_port, ctx)
        else:
            _assert_refused(p.tls_port, ctx)
    # A refused handshake does not take the listener down.
    _assert_ok(p.tls_port, clients[1])
    assert harness.http_get(p.http_url + "/healthz").status_code == 200


def test_tls_client_auth_from_env(stack):
    certs = stack.ctx.certs
    p = _start(stack, "mtls-env", extra_env={"CODER_TLS_CLIENT_AUTH": "require-and-verify",
                                             "CODER_TLS_CLIENT_CA_FILE": certs.ca})
    _assert_refused(p.tls_port, tls_client_context(certs.ca))
    _assert_ok(p.tls_port, tls_client_context(certs.ca, certs.client_cert, certs.client_key))


def test_hsts(stack):
    certs = stack.ctx.certs
    p = _start(stack, "hsts", ["--strict-transport-security", "3600",
                               "--strict-transport-security-options", "includeSubDomains"])
    for path in ("/healthz", "/api/v2/buildinfo", "/nope"):
        _, headers, _ = https_get_status(p.tls_port, tls_client_context(certs.ca), path=path)
        assert headers.get("strict-transport-security") == "max-age=3600; includeSubDomains"
        r = harness.http_get(p.http_url + path)
        assert "Strict-Transport-Security" not in r.headers, path


def test_bad_tls_options_fail_clearly(stack):
    certs = stack.ctx.certs
    cases = [
        (["--tls-min-version", "tls99"], "tls99"),
        (["--tls-client-auth", "sometimes"], "sometimes"),
    ]
    for args, needle in cases:
        _, token = stack.create_proxy()
        p = stack.start_proxy(token, extra_args=args)
        p.start(wait=False)
        rc, err = p.expect_exit(10)
        assert rc > 0, (args, rc)
        assert needle in strip_ansi(err), (args, err)
    # A missing certificate file names the file.
    _, token = stack.create_proxy()
    p = stack.start_proxy(token, extra_env={"CODER_TLS_CERT_FILE": certs.dir / "missing.pem"})
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    assert rc > 0 and "missing.pem" in err, (rc, err)


def test_outbound_trust_to_a_tls_primary(ctx):
    certs = ctx.certs
    primary = ctx.primary(tls=True, health_interval="1s").start()
    client = ctx.client()
    client.login_owner(primary.url)
    stack = harness.Stack(ctx, primary, client)
    _, token = stack.create_proxy("trust")
    before = stack.snapshot()

    # No SSL_CERT_FILE: the system store does not know the test CA -> clear error, exit != 0.
    p = stack.start_proxy(token, name="trust", ssl_cert_file=False)
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    assert rc > 0, (rc, err)
    assert "certificate" in strip_ansi(err).lower(), err
    assert stack.snapshot() == before
    assert stack.status("trust") == "unregistered"

    # SSL_CERT_DIR pointing at a hashed directory with the CA works.
    p = stack.start_proxy(token, name="trust", ssl_cert_file=False,
                          extra_env={"SSL_CERT_DIR": certs.ca_dir}).start()
    stack.wait_status("trust", "ok")
    assert p.stop() == 0

    # SSL_CERT_FILE works.
    p = stack.start_proxy(token, name="trust").start()
    stack.wait_status("trust", "ok")
    assert p.stop() == 0
