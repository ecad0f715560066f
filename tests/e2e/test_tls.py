"""TLS on the proxy (min version, client auth modes, HSTS), outbound trust to the primary, and
Coder's self-signed certificate when TLS is enabled without one."""

import socket
import ssl
import subprocess

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


def test_tls_min_version_tls10(stack):
    """--tls-min-version tls10 really admits a TLS 1.0 client (OpenSSL 3 refuses SHA-1 suites at
    its default security level, so the flag alone was not enough); the default refuses it."""
    certs = stack.ctx.certs
    import warnings

    old = ssl.create_default_context(cafile=str(certs.ca))
    with warnings.catch_warnings():  # TLS 1.0 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # our client side allows it too
    p = _start(stack, "tls10", ["--tls-min-version", "tls10"])
    status, _, _ = https_get_status(p.tls_port, old)
    assert status == 200
    d = _start(stack, "tls10default")
    _assert_refused(d.tls_port, old)


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


# ---- TLS enabled with no certificate: a self-signed one, as Coder's configureServerTLS makes
# (cli/server.go generateSelfSignedCertificate: ECDSA P-256, serial 1, 180 days, 127.0.0.1).

SELF_SIGNED_LOG = "serving a self-signed certificate"


def _peer_cert_pem(port):
    """The certificate a TLS listener presents, fetched without verifying it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with ctx.wrap_socket(raw) as s:
            return ssl.DER_cert_to_PEM_cert(s.getpeercert(binary_form=True))


def _openssl_out(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def _assert_coder_self_signed(port, path, test_ca):
    """The listener on port serves /healthz under a certificate signed by its own key, shaped
    as Coder's. Returns its PEM."""
    pem = _peer_cert_pem(port)
    path.write_text(pem)
    # Signed by its own key: it verifies with itself as the only trust anchor, its own
    # signature checked too (a certificate from the test CA fails this).
    rc, out = _openssl_out("verify", "-check_ss_sig", "-CAfile", str(path), str(path))
    assert rc == 0 and out.strip().endswith("OK"), out
    rc, text = _openssl_out("x509", "-in", str(path), "-noout", "-text")
    assert rc == 0, text
    for needle in ("Serial Number: 1 (0x1)", "ecdsa-with-SHA256", "NIST CURVE: P-256",
                   "CA:FALSE", "Digital Signature, Key Encipherment",
                   "TLS Web Server Authentication", "IP Address:127.0.0.1"):
        assert needle in text, (needle, text)
    # A client that trusts exactly this certificate reaches /healthz on 127.0.0.1: the name
    # matches, and the peer's fields are Coder's (empty subject = issuer, 180 days).
    ctx = tls_client_context(path)
    assert https_get_status(port, ctx)[::2] == (200, b"OK")
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            cert = s.getpeercert()
    assert cert["subject"] == () and cert["issuer"] == (), cert
    assert cert["subjectAltName"] == (("IP Address", "127.0.0.1"),), cert
    days = (ssl.cert_time_to_seconds(cert["notAfter"]) -
            ssl.cert_time_to_seconds(cert["notBefore"])) / 86400
    assert days == 180, cert
    # Not the test CA's certificate: a client trusting only that CA refuses it.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get_status(port, tls_client_context(test_ca))
    return pem


def _assert_logged_once_no_key(proc):
    out = proc.output()
    assert strip_ansi(out).count(SELF_SIGNED_LOG) == 1, out
    assert "PRIVATE KEY" not in out and "BEGIN" not in out, out


def test_self_signed_when_no_certificate(stack, tmp_path):
    ca = stack.ctx.certs.ca
    # The primary, with flags.
    tls_port = harness.free_port()
    primary = stack.ctx.primary(
        name="selfsigned-primary",
        extra_args=["--tls-enable", "--tls-address", f"127.0.0.1:{tls_port}"]).start()
    primary_pem = _assert_coder_self_signed(tls_port, tmp_path / "primary.pem", ca)
    _assert_logged_once_no_key(primary.proc)

    # The proxy, with the environment (the seed's certificate variables removed).
    p = _start(stack, "selfsigned", extra_env={"CODER_TLS_CERT_FILE": None,
                                               "CODER_TLS_KEY_FILE": None})
    proxy_pem = _assert_coder_self_signed(p.tls_port, tmp_path / "proxy.pem", ca)
    _assert_logged_once_no_key(p.proc)
    # Made at start-up: each process has its own key.
    assert proxy_pem != primary_pem
    assert primary.stop() == 0


MISMATCH = "--tls-cert-file and --tls-key-file must be used the same amount of times"


def test_key_without_certificate_is_an_error(stack):
    certs = stack.ctx.certs
    # Proxy: a key file alone, from the environment.
    _, token = stack.create_proxy()
    p = stack.start_proxy(token, extra_env={"CODER_TLS_CERT_FILE": None})
    p.start(wait=False)
    rc, err = p.expect_exit(10)
    err = strip_ansi(err)
    assert rc > 0 and MISMATCH in err and SELF_SIGNED_LOG not in err, (rc, err)
    assert len([ln for ln in err.splitlines() if MISMATCH in ln]) == 1, err

    # Primary: a certificate file alone, from flags.
    primary = stack.ctx.primary(
        name="certonly-primary",
        extra_args=["--tls-enable", "--tls-address", f"127.0.0.1:{harness.free_port()}",
                    "--tls-cert-file", certs.server_cert])
    primary.proc.start()
    rc = primary.proc.wait(10)
    err = strip_ansi(primary.proc.stderr())
    assert rc > 0 and MISMATCH in err and SELF_SIGNED_LOG not in err, (rc, err)
