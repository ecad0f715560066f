"""Self-tests of the harness parts that do not need the `coder` binary."""

import os
import socket
import ssl
import subprocess
import threading

import pytest

import harness


def test_free_port_is_bindable_and_distinct():
    ports = {harness.free_port() for _ in range(20)}
    assert len(ports) >= 19  # the kernel hands out different ephemeral ports
    p = ports.pop()
    assert 1024 < p < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
        s.listen()
        assert harness.port_is_listening(p)
    assert not harness.port_is_listening(p)


def test_wait_for_returns_value_and_times_out_clearly():
    calls = []

    def pred():
        calls.append(1)
        return len(calls) >= 3 and "done"

    assert harness.wait_for(pred, 2, 0.01) == "done"

    def boom():
        raise ConnectionRefusedError("nope")

    with pytest.raises(harness.WaitTimeout) as ei:
        harness.wait_for(boom, 0.2, 0.05, desc="server up")
    assert "server up" in str(ei.value) and "ConnectionRefusedError" in str(ei.value)

    def abort():
        raise harness.Abort("process died")

    with pytest.raises(harness.Abort):
        harness.wait_for(abort, 5, 0.05)


def _serve_tls_once(certs, require_client_cert=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(certs.ca))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def run():
        conn, _ = srv.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as t:
                t.recv(4096)
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
        except (ssl.SSLError, OSError):
            pass
        finally:
            srv.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return port, th


def test_certs_verify_for_ip_and_localhost(certs):
    for f in (certs.ca, certs.server_cert, certs.server_key, certs.client_cert,
              certs.other_client_cert):
        assert f.exists() and f.stat().st_size > 0
    assert oct(certs.server_key.stat().st_mode & 0o777) == "0o600"
    text = subprocess.run(["openssl", "x509", "-in", str(certs.server_cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    for san in ("IP Address:127.0.0.1", "DNS:localhost", "DNS:*.newyork.localhost",
                "DNS:*.primary.localhost", "DNS:*.proxy.localhost"):
        assert san in text
    # The server cert verifies against the CA, by IP and by name.
    for host in ("127.0.0.1", "localhost"):
        port, th = _serve_tls_once(certs)
        ctx = harness.tls_client_context(certs.ca)
        status, _, body = harness.https_get_status(port, ctx, host=host)
        assert (status, body) == (200, b"OK")
        th.join(5)
    # ...and not against the other CA.
    port, th = _serve_tls_once(certs)
    with pytest.raises(ssl.SSLError):
        harness.https_get_status(port, harness.tls_client_context(certs.other_ca))
    th.join(5)


def test_client_certs_chain_to_their_ca(certs):
    port, th = _serve_tls_once(certs, require_client_cert=True)
    ctx = harness.tls_client_context(certs.ca, certs.client_cert, certs.client_key)
    assert harness.https_get_status(port, ctx)[0] == 200
    th.join(5)
    port, th = _serve_tls_once(certs, require_client_cert=True)
    ctx = harness.tls_client_context(certs.ca, certs.other_client_cert, certs.other_client_key)
    with pytest.raises(harness.TLS_REFUSED):
        harness.https_get_status(port, ctx)
    th.join(5)
    # The hashed CA directory (for SSL_CERT_DIR) holds the CA under its subject hash.
    names = os.listdir(certs.ca_dir)
    assert any(n.endswith(".0") for n in names), names


def test_process_env_logs_stop_and_kill(tmp_path, monkeypatch):
    monkeypatch.setenv("CODER_SHOULD_NOT_LEAK", "1")
    env = harness.base_env(tmp_path, {"FOO": "bar"})
    assert not any(k.startswith("CODER_") for k in env)
    script = ('echo started; env; echo oops >&2; '
              'trap "echo bye; exit 3" TERM; while :; do sleep 0.05; done')
    p = harness.Process("sh", ["/bin/sh", "-c", script], env, tmp_path / "logs")
    p.start()
    # `env` has finished writing once "oops" (printed after it) is there.
    harness.wait_for(lambda: "oops" in p.stderr(), 5, 0.02)
    out = p.stdout()
    assert "FOO=bar" in out and f"HOME={tmp_path}" in out and "CODER_" not in out
    assert p.stop() == 3
    assert "bye" in p.stdout()
    assert "oops" in p.tail()
    # Restart: output of the new run only; then SIGKILL.
    p.start()
    harness.wait_for(lambda: "started" in p.stdout(), 5, 0.02)
    assert "bye" not in p.stdout()
    assert p.kill9() == -9
    # A process ignoring SIGTERM is SIGKILLed after the timeout.
    q = harness.Process("stubborn", ["/bin/sh", "-c", 'trap "" TERM; echo up; '
                                     'while :; do sleep 0.05; done'], env, tmp_path / "logs")
    q.start()
    harness.wait_for(lambda: "up" in q.stdout(), 5, 0.02)
    assert q.stop(timeout=0.5) == -9


def test_parse_table_keeps_empty_cells():
    text = ("NAME     URL                     PROXY STATUS\n"
            "primary  http://127.0.0.1:3000   ok\n"
            "newyork                          unregistered\n")
    rows = harness.parse_table(text)
    assert rows == [
        {"name": "primary", "url": "http://127.0.0.1:3000", "proxy status": "ok"},
        {"name": "newyork", "url": "", "proxy status": "unregistered"},
    ]
    assert harness.table_header(text) == ["NAME", "URL", "PROXY STATUS"]


def test_parse_ls_text():
    text = ("Workspace Proxies:\n"
            "0: primary http://127.0.0.1:3000 ok\n"
            "1: newyork  unregistered\n"
            "2: bad https://127.0.0.1:9 unhealthy\n"
            "\tErr: unexpected status code 500. \n"
            "Encountered error, send a request\n"
            "\tWarn: careful\n")
    rows = harness.parse_ls_text(text)
    assert [(r["name"], r["url"], r["status"]) for r in rows] == [
        ("primary", "http://127.0.0.1:3000", "ok"), ("newyork", "", "unregistered"),
        ("bad", "https://127.0.0.1:9", "unhealthy")]
    assert rows[2]["errors"] == ["unexpected status code 500.\nEncountered error, send a request"]
    assert rows[2]["warnings"] == ["careful"]


def test_metric_samples():
    text = ('# HELP x_total help\n# TYPE x_total counter\nx_total{code="200",path="/a"} 3\n'
            'x_total{code="500",path="/b"} 1e+00\nx_total_other 9\n')
    assert harness.metric_samples(text, "x_total") == [
        ({"code": "200", "path": "/a"}, 3.0), ({"code": "500", "path": "/b"}, 1.0)]


def test_fake_web_server_and_raw_http():
    w = harness.FakeWebServer()
    try:
        r = harness.http_get(w.url + "/anything")
        assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
        w.mode = "json-report"
        w.report = {"errors": ["x"], "warnings": []}
        st, hdrs, body = harness.raw_http(w.port, "GET /healthz-report HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 200 and hdrs["content-type"] == "application/json"
        assert body == b'{"errors": ["x"], "warnings": []}'
        assert len(w.requests_to("/healthz-report")) == 1
    finally:
        w.close()
