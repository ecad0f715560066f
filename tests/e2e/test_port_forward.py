"""`coder port-forward` (CODER-COMPAT part 2 §5.2) through the primary and the agent's tunnel:
a real TCP client on a local port reaches a TCP server in the workspace, byte-exact, and every
bad spec is one clear line."""

import hashlib
import socket
import threading

import pytest

from harness import free_port, wait_for


@pytest.fixture(scope="module")
def echo_port():
    """A TCP server in the "workspace" that echoes what it receives, upper-cased for text."""
    port = free_port()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)

    def serve(c):
        with c:
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                c.sendall(d)

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield port
    srv.close()


@pytest.fixture(scope="module")
def env(mctx):
    stack = mctx.stack()
    stack.start_agent(stack.create_workspace("dev"))
    return stack


def _forward(stack, *specs):
    args = ["port-forward", "dev"]
    for s in specs:
        args += ["--tcp", s]
    p = stack.ctx.process("port-forward", args, stack.client.env_extra())
    p.start()
    wait_for(lambda: "Ready!" in p.stderr(), 10, 0.1, "port-forward ready")
    return p


def test_forward_round_trip_and_bulk(env, echo_port):
    local = free_port()
    pf = _forward(env, f"{local}:{echo_port}")
    assert (f"Forwarding 'tcp://127.0.0.1:{local}' locally to 'tcp://127.0.0.1:{echo_port}' in "
            "the workspace") in pf.stderr()
    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        # 8 MiB through, byte-exact, with a reader on the other side.
        blob = hashlib.shake_256(b"pf").digest(8 << 20)
        got = bytearray()

        def reader():
            while len(got) < len(blob):
                d = s.recv(1 << 16)
                if not d:
                    break
                got.extend(d)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(blob)
        t.join(30)
        assert bytes(got) == blob
    # Several connections at once.
    conns = [socket.create_connection(("127.0.0.1", local), timeout=10) for _ in range(10)]
    for i, c in enumerate(conns):
        c.sendall(f"conn {i}".encode())
    for i, c in enumerate(conns):
        assert c.recv(64) == f"conn {i}".encode()
        c.close()
    assert pf.stop() == 0
    assert "Received signal, closing all listeners and active connections" in pf.stderr()


def test_refused_port_is_reported(env):
    local, dead = free_port(), free_port()
    pf = _forward(env, f"{local}:{dead}")
    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
        assert s.recv(10) == b""  # closed: nothing listens there in the workspace
    wait_for(lambda: f"Failed to dial 'tcp://127.0.0.1:{dead}' in workspace:" in pf.stderr(), 5,
             0.1, "dial failure reported")
    assert "connection refused" in pf.stderr()
    assert pf.stop() == 0


@pytest.mark.parametrize("specs,message", [
    ((), "no port-forwards requested"),
    (("0:80",), 'invalid port specification "0:80"'),
    (("abc",), 'invalid port specification "abc"'),
    (("8000-8002:9000-9001",), 'invalid port specification "8000-8002:9000-9001"'),
    (("7000:80", "7000:81"), "local tcp host:127.0.0.1 port:7000 is specified twice"),
])
def test_bad_specs(env, specs, message):
    args = ["port-forward", "dev"]
    for s in specs:
        args += ["--tcp", s]
    r = env.client.run(*args)
    assert r.rc == 1, r
    assert len(r.err_lines) == 1, r
    assert message in r.err_lines[0], r


def test_unknown_workspace(env):
    r = env.client.run("port-forward", "nope", "--tcp", "7001")
    assert r.rc == 1 and len(r.err_lines) == 1, r
    assert "Resource not found" in r.err_lines[0]
