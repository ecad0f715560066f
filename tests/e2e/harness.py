"""End-to-end test harness: real `coder` processes on free loopback ports.

Only the Python standard library, pytest and requests are used (Debian's /usr/bin/python3).
Everything a test starts is tracked here so that the conftest can stop it by PID at teardown
and print the tail of its logs when a test fails.
"""

import http.client
import itertools
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

OWNER_USERNAME = "admin"
OWNER_EMAIL = "admin@example.com"
OWNER_PASSWORD = "SomeSecurePassword!1"
OWNER_FULL_NAME = "Admin"

# Coder's API key: <10 chars>-<22 chars> from [0-9A-Za-z].
API_KEY_RE = re.compile(r"^[0-9A-Za-z]{10}-[0-9A-Za-z]{22}$")
UUID_RE_S = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
UUID_RE = re.compile(r"^" + UUID_RE_S + r"$")
PROXY_TOKEN_RE = re.compile(r"^(" + UUID_RE_S + r"):([0-9a-f]{64})$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# Substrings that mean a sanitizer found a bug in a process (the suite must pass under
# ASan+UBSan with no report).
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",  # UBSan
    "SUMMARY: UndefinedBehaviorSanitizer",
)

# Variables passed through from the outer environment besides PATH: sanitizer settings only,
# never CODER_* (each test builds its processes' environment from scratch).
PASSTHROUGH_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "LANG", "LC_ALL", "TZ")


def coder_bin():
    """Path of the binary under test: $CODER_BIN, else <repo>/build/coder."""
    return os.environ.get("CODER_BIN") or str(REPO_ROOT / "build" / "coder")


def strip_ansi(s):
    return ANSI_RE.sub("", s)


# --------------------------------------------------------------------------------------------
# Waiting


class WaitTimeout(AssertionError):
    pass


class Abort(Exception):
    """Raised by a wait_for predicate to stop waiting at once (e.g. the process died)."""


def wait_for(predicate, timeout=15.0, interval=0.1, desc=None):
    """Call predicate until it returns a truthy value, and return that value.

    Exceptions raised by predicate are remembered and retried (a server that is not up yet
    refuses connections), except Abort, which is re-raised at once. On timeout raises
    WaitTimeout naming desc, the last value and the last exception.
    """
    deadline = time.monotonic() + timeout
    last_val = None
    last_exc = None
    while True:
        try:
            last_val = predicate()
            last_exc = None
            if last_val:
                return last_val
        except Abort:
            raise
        except Exception as e:  # noqa: BLE001 - retried, reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            what = desc or getattr(predicate, "__name__", "condition")
            msg = f"timed out after {timeout:.1f}s waiting for: {what}"
            if last_exc is not None:
                msg += f"\n  last exception: {type(last_exc).__name__}: {last_exc}"
            else:
                msg += f"\n  last value: {last_val!r}"
            raise WaitTimeout(msg)
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Ports


def free_port():
    """A free TCP port on 127.0.0.1 (bind to 0, read, close; the small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(handler, certs=None):
    """Runs a test app (an http.server handler class) on a free loopback port, over HTTPS with
    the test certificate when certs is given; yields the port and stops it afterwards. For
    fixtures: `yield from serve_app(Handler)`."""
    import http.server

    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if certs is not None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certs.server_cert, certs.server_key)
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield port
    finally:
        srv.shutdown()
        srv.server_close()


def port_is_listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Certificates (openssl CLI)


class Certs:
    """Paths of the test PKI. `ca` signs server/client; `other_ca` signs other_client."""

    def __init__(self, d):
        d = Path(d)
        self.dir = d
        self.ca = d / "ca.pem"
        self.ca_key = d / "ca.key"
        self.server_cert = d / "server.pem"
        self.server_key = d / "server.key"
        self.client_cert = d / "client.pem"
        self.client_key = d / "client.key"
        self.other_ca = d / "other-ca.pem"
        self.other_ca_key = d / "other-ca.key"
        self.other_client_cert = d / "other-client.pem"
        self.other_client_key = d / "other-client.key"
        self.ca_dir = d / "ca-dir"  # hashed directory holding only `ca` (for SSL_CERT_DIR)


SERVER_SANS = [
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:*.localhost",
    "DNS:*.proxy.localhost",
    "DNS:*.primary.localhost",
    "DNS:*.newyork.localhost",
]

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def make_certs(d):
    """Create a CA, a server cert for 127.0.0.1/localhost (+ wildcard SANs), a client cert
    signed by the CA, and a second CA with its own client cert. Returns Certs."""
    c = Certs(d)
    c.dir.mkdir(parents=True, exist_ok=True)
    cnf = c.dir / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF.format(sans=",".join(SERVER_SANS)))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def make_ca(cert, key, cn):
        _openssl("req", "-config", str(cnf), "-x509", *ec, "-keyout", str(key), "-out",
                 str(cert), "-days", "3650", "-subj", f"/CN={cn}", "-extensions", "ca_ext",
                 cwd=c.dir)

    def make_leaf(cert, key, cn, ca, ca_key, ext):
        csr = cert.with_suffix(".csr")
        _openssl("req", "-config", str(cnf), "-new", *ec, "-keyout", str(key), "-out",
                 str(csr), "-subj", f"/CN={cn}", cwd=c.dir)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825",
                 "-out", str(cert), "-extfile", str(cnf), "-extensions", ext, cwd=c.dir)
        csr.unlink()

    make_ca(c.ca, c.ca_key, "coder-e2e-ca")
    make_ca(c.other_ca, c.other_ca_key, "coder-e2e-other-ca")
    make_leaf(c.server_cert, c.server_key, "localhost", c.ca, c.ca_key, "server_ext")
    make_leaf(c.client_cert, c.client_key, "e2e-client", c.ca, c.ca_key, "client_ext")
    make_leaf(c.other_client_cert, c.other_client_key, "e2e-other-client", c.other_ca,
              c.other_ca_key, "client_ext")
    c.ca_dir.mkdir(exist_ok=True)
    (c.ca_dir / "ca.pem").write_bytes(c.ca.read_bytes())
    _openssl("rehash", str(c.ca_dir), cwd=c.dir)
    for k in (c.ca_key, c.server_key, c.client_key, c.other_ca_key, c.other_client_key):
        os.chmod(k, 0o600)
    return c


# --------------------------------------------------------------------------------------------
# Processes

_registry_lock = threading.Lock()
ALL_PROCESSES = []  # every Process ever started, in start order (for failure reports)
_seq = itertools.count(1)


def base_env(home, extra=None):
    """A process environment built from scratch: PATH, HOME, sanitizer options, + extra."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    for k in PASSTHROUGH_ENV:
        if k in os.environ:
            env[k] = os.environ[k]
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def find_sanitizer_report(text):
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            return text[max(0, i - 200): i + 2000]
    return None


class Process:
    """A long-running child process with stdout/stderr in log files.

    start() may be called again after the process exited (a restart with the same args and
    env); stdout()/stderr() return what the current run wrote.
    """

    def __init__(self, name, args, env, log_dir, cwd=None):
        self.name = name
        self.args = [str(a) for a in args]
        self.env = dict(env)
        self.cwd = str(cwd) if cwd else None
        seq = next(_seq)
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{seq:03d}-{name}.stdout.log"
        self.stderr_path = log_dir / f"{seq:03d}-{name}.stderr.log"
        self.popen = None
        self.index = None
        self.starts = 0
        self._out_off = 0
        self._err_off = 0

    # -- lifecycle

    def start(self):
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        marker = f"===== start #{self.starts}: {' '.join(self.args)}\n"
        for p in (self.stdout_path, self.stderr_path):
            with open(p, "a") as f:
                f.write(marker)
        self._out_off = self.stdout_path.stat().st_size
        self._err_off = self.stderr_path.stat().st_size
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, start_new_session=True)
        finally:
            out.close()
            err.close()
        with _registry_lock:
            if self.index is None:
                self.index = len(ALL_PROCESSES)
                ALL_PROCESSES.append(self)
            else:  # a restart is "new" again for failure reports
                ALL_PROCESSES.remove(self)
                self.index = len(ALL_PROCESSES)
                ALL_PROCESSES.append(self)
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def returncode(self):
        return self.popen.poll() if self.popen else None

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout):
        """Wait for exit; return the exit code (negative = killed by that signal)."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"{self.name} (pid {self.pid}) still running after {timeout}s\n"
                f"stderr tail:\n{self.tail(20)}") from None

    def signal(self, sig):
        if self.running():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.popen is None:
            return None
        if self.running():
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.popen.wait(timeout=10)

    def kill9(self):
        """SIGKILL at once. Returns the exit code (-9)."""
        if self.running():
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.popen.wait(timeout=10)

    # -- output

    @staticmethod
    def _read(path, off):
        try:
            with open(path, "rb") as f:
                f.seek(off)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout(self):
        """Everything the current run wrote to stdout."""
        return self._read(self.stdout_path, self._out_off)

    def stderr(self):
        return self._read(self.stderr_path, self._err_off)

    def output(self):
        return self.stdout() + self.stderr()

    def tail(self, n=40):
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = self._read(path, 0)
            lines = text.splitlines()
            parts.append(f"--- {label} ({path}), last {min(n, len(lines))} of {len(lines)} "
                         f"lines ---")
            parts.extend(lines[-n:])
        return "\n".join(parts)

    def sanitizer_report(self):
        return find_sanitizer_report(self._read(self.stderr_path, 0)) or find_sanitizer_report(
            self._read(self.stdout_path, 0))

    def __repr__(self):
        return f"<Process {self.name} pid={self.pid} rc={self.returncode}>"


class Result:
    """Outcome of a short CLI run."""

    def __init__(self, args, rc, stdout, stderr):
        self.args = args
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def __iter__(self):  # rc, out, err = client.run(...)
        return iter((self.rc, self.stdout, self.stderr))

    @property
    def out_lines(self):
        return strip_ansi(self.stdout).splitlines()

    @property
    def err_lines(self):
        """Non-empty stderr lines, colour codes removed."""
        return [ln for ln in strip_ansi(self.stderr).splitlines() if ln.strip()]

    def __repr__(self):
        return (f"Result(args={self.args!r}, rc={self.rc},\n  stdout={self.stdout!r},\n"
                f"  stderr={self.stderr!r})")


def run_cmd(args, env, timeout=30.0, input=None, cwd=None):
    args = [str(a) for a in args]
    try:
        p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, input=input if input is not None else "",
                           errors="replace")
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"command timed out after {timeout}s: {args}\n"
                             f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
    res = Result(args, p.returncode, p.stdout, p.stderr)
    rep = find_sanitizer_report(p.stderr)
    if rep:
        raise AssertionError(f"sanitizer report from {args}:\n{rep}")
    return res


# --------------------------------------------------------------------------------------------
# HTTP helpers


class Api:
    """requests wrapper bound to a base URL, optionally with a Coder session token."""

    def __init__(self, base_url, token=None, verify=None, timeout=10.0):
        self.base = base_url.rstrip("/")
        self.s = requests.Session()
        self.s.trust_env = False  # never use the outer environment's HTTP proxies
        if verify is not None:
            self.s.verify = str(verify)
        if token:
            self.s.headers["Coder-Session-Token"] = token
        self.timeout = timeout

    def request(self, method, path, **kw):
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("allow_redirects", False)
        return self.s.request(method, self.base + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def close(self):
        self.s.close()


def http_request(method, url, verify=None, timeout=5.0, **kw):
    """One-off request without the outer environment's proxies."""
    with requests.Session() as s:
        s.trust_env = False
        return s.request(method, url, verify=str(verify) if verify else True, timeout=timeout,
                         allow_redirects=False, **kw)


def http_get(url, verify=None, timeout=5.0, **kw):
    return http_request("GET", url, verify=verify, timeout=timeout, **kw)


def raw_http(port, head, body_chunks=(), host="127.0.0.1", timeout=10.0, tls_context=None):
    """Send a hand-made request; return (status, headers{lower: value}, body bytes).

    The body is sent from a thread while the response is read, so a server that answers
    early (e.g. 413 on a too-large Content-Length) and closes is handled. Returns status
    None if the server closed without any response.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls_context is not None:
        sock = tls_context.wrap_socket(sock, server_hostname=host)
    try:
        head = head if isinstance(head, bytes) else head.encode()

        def sender():
            # Errors are ignored: the server may answer and close before reading it all.
            try:
                sock.sendall(head)
                for chunk in body_chunks:
                    sock.sendall(chunk)
            except (OSError, ValueError):
                pass

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([sock], [], [], 0.2)
            if not r:
                if _response_complete(data):
                    break
                continue
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            data += chunk
            if _response_complete(data):
                break
        return _parse_response(data)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _response_complete(data):
    if b"\r\n\r\n" not in data:
        return False
    head, body = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(body) >= int(m.group(1))
    return False


def _parse_response(data):
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", lines[0])
    status = int(m.group(1)) if m else None
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, body


def tls_client_context(ca, cert=None, key=None, min_version=None, max_version=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def https_get_status(port, ctx, path="/healthz", host="127.0.0.1", timeout=5.0):
    """GET over TLS with an explicit ssl context; returns (status, headers, body).

    Raises ssl.SSLError / OSError / http.client errors when the server refuses the handshake
    or closes the connection (e.g. a required client certificate was not sent).
    """
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    # Always dial loopback by address; `host` only names the server for SNI and verification
    # (a minimal root may have no /etc/hosts to resolve "localhost").
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout),
                                server_hostname=host)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# Errors that mean "the TLS server refused us" (in TLS 1.3 the refusal of a client certificate
# arrives after the client finished its handshake, so it surfaces on the first read).
TLS_REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected,
               http.client.BadStatusLine, OSError)


# --------------------------------------------------------------------------------------------
# Prometheus text


def metric_samples(text, name):
    """[(labels dict, float value)] of every sample of metric `name` in exposition text."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("#") or not ln.startswith(name):
            continue
        m = re.match(r"^" + re.escape(name) + r"(\{(.*)\})?\s+(\S+)", ln)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((labels, float(m.group(3))))
    return out


# --------------------------------------------------------------------------------------------
# Plain web server (for "not a coder instance" cases)


class FakeWebServer:
    """A plain HTTP/1.1 (keep-alive) server on loopback, in a thread.

    mode "html": every path answers 200 text/html. mode "json-report": /healthz-report answers
    200 application/json with self.report. mode "status": every path answers self.status with
    a JSON error body. Records (path, client port) of every request.
    """

    def __init__(self):
        import http.server

        outer = self
        self.mode = "html"
        self.report = {"errors": [], "warnings": []}
        self.status = 500
        self.requests = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.requests.append((self.path, self.client_address[1]))
                    mode = outer.mode
                if mode == "json-report" and self.path.startswith("/healthz-report"):
                    body = json.dumps(outer.report).encode()
                    self._reply(200, "application/json", body)
                elif mode == "status":
                    body = json.dumps({"message": "fake failure", "detail": "teapot"}).encode()
                    self._reply(outer.status, "application/json", body)
                else:
                    body = (b"<!doctype html><html><head><title>Welcome to nginx!</title>"
                            b"</head><body><h1>It works</h1></body></html>")
                    self._reply(200, "text/html; charset=utf-8", body)

            do_POST = do_GET

            def _reply(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests_to(self, prefix):
        with self.lock:
            return [r for r in self.requests if r[0].startswith(prefix)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# The world a test runs in: directories, certificates, processes


class Ctx:
    """Per-test (or per-module) context: a directory, the certificates, started processes."""

    def __init__(self, base_dir, certs, binary):
        self.dir = Path(base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home = self.dir / "home"
        self.home.mkdir(exist_ok=True)
        self.logs = self.dir / "logs"
        self.certs = certs
        self.bin = binary
        self.processes = []
        self.web_servers = []
        self._names = itertools.count(1)

    def env(self, extra=None):
        return base_env(self.home, extra)

    def process(self, name, args, env_extra=None):
        p = Process(name, [self.bin, *args], self.env(env_extra), self.logs)
        self.processes.append(p)
        return p

    def run(self, args, env_extra=None, timeout=30.0, input=None):
        """Run `coder <args>` to completion with a scratch environment."""
        return run_cmd([self.bin, *args], self.env(env_extra), timeout=timeout, input=input)

    def fake_web_server(self):
        w = FakeWebServer()
        self.web_servers.append(w)
        return w

    def unique(self, prefix):
        return f"{prefix}{next(self._names)}"

    def primary(self, **kw):
        return Primary(self, **kw)

    def client(self, name="client", config_dir=None):
        return Client(self, config_dir or self.dir / f"{name}-config")

    def wsproxy(self, primary_url, token, **kw):
        return WsProxy(self, primary_url, token, **kw)

    def stack(self, **primary_kw):
        """Start a primary, log the Owner in; return a Stack."""
        p = self.primary(**primary_kw).start()
        c = self.client()
        c.login_owner(p.url)
        return Stack(self, p, c)

    def teardown(self):
        """Stop every process by PID; return sanitizer reports found in their logs."""
        reports = []
        for p in reversed(self.processes):
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        for p in self.processes:
            if p.popen is not None:
                rep = p.sanitizer_report()
                if rep:
                    reports.append(f"{p.name} (pid {p.pid}):\n{rep}")
        for w in self.web_servers:
            try:
                w.close()
            except Exception:  # noqa: BLE001
                pass
        return reports


class Primary:
    """`coder server` on free loopback ports with its own config dir."""

    def __init__(self, ctx, *, name="primary", health_interval=None, wildcard=True,
                 prometheus=False, tls=False, http=True, config_dir=None, extra_args=(),
                 extra_env=None):
        self.ctx = ctx
        self.name = name
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.metrics_port = free_port() if prometheus else None
        self.config_dir = Path(config_dir or ctx.dir / f"{name}-config")
        self.tls = tls
        self.http_url = f"http://127.0.0.1:{self.port}" if http else None
        self.url = f"https://127.0.0.1:{self.tls_port}" if tls else self.http_url
        args = ["server", "--access-url", self.url]
        if http:
            args += ["--http-address", f"127.0.0.1:{self.port}"]
        else:
            args += ["--http-address", ""]
        if wildcard:
            wport = self.tls_port if tls else self.port
            self.wildcard = f"*.primary.localhost:{wport}"
            args += ["--wildcard-access-url", self.wildcard]
        else:
            self.wildcard = None
        if tls:
            args += ["--tls-enable", "--tls-address", f"127.0.0.1:{self.tls_port}",
                     "--tls-cert-file", ctx.certs.server_cert, "--tls-key-file",
                     ctx.certs.server_key]
        args += list(extra_args)
        env = {"CODER_CONFIG_DIR": self.config_dir, "SSL_CERT_FILE": ctx.certs.ca}
        if health_interval:
            env["CODER_PROXY_HEALTH_INTERVAL"] = health_interval
        if prometheus:
            env["CODER_PROMETHEUS_ENABLE"] = "true"
            env["CODER_PROMETHEUS_ADDRESS"] = f"127.0.0.1:{self.metrics_port}"
        env.update(extra_env or {})
        self.proc = ctx.process(name, args, env)

    @property
    def db_path(self):
        return self.config_dir / "coder.db"

    def api(self, token=None):
        return Api(self.url, token=token, verify=self.ctx.certs.ca)

    def healthz_ok(self):
        r = http_get(self.url + "/healthz", verify=self.ctx.certs.ca, timeout=2)
        return r.status_code == 200 and r.text.strip() == "OK"

    def start(self, wait=True, timeout=15.0):
        self.proc.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=15.0):
        def ready():
            if not self.proc.running():
                raise Abort(f"{self.name} exited with {self.proc.returncode} before it was "
                            f"ready:\n{self.proc.tail(30)}")
            return self.healthz_ok()

        wait_for(ready, timeout, 0.05, f"{self.name} GET {self.url}/healthz -> 200 OK")

    def stop(self):
        return self.proc.stop()

    def kill9(self):
        return self.proc.kill9()

    def metrics(self):
        r = http_get(f"http://127.0.0.1:{self.metrics_port}/", timeout=5)
        assert r.status_code == 200, r.text
        return r.text


class Client:
    """The `coder` CLI with its own config dir (CODER_CONFIG_DIR, separate from servers')."""

    def __init__(self, ctx, config_dir):
        self.ctx = ctx
        self.config_dir = Path(config_dir)

    def env_extra(self, extra=None):
        e = {"CODER_CONFIG_DIR": self.config_dir, "SSL_CERT_FILE": self.ctx.certs.ca}
        e.update(extra or {})
        return e

    def run(self, *args, env=None, timeout=30.0, input=None):
        return self.ctx.run(list(args), self.env_extra(env), timeout=timeout, input=input)

    def login_owner(self, url, check=True):
        r = self.run("login", url, "--first-user-username", OWNER_USERNAME,
                     "--first-user-email", OWNER_EMAIL, "--first-user-password", OWNER_PASSWORD,
                     "--first-user-full-name", OWNER_FULL_NAME, "--first-user-trial=false")
        if check:
            assert r.rc == 0, r
            assert f"Welcome to Coder, {OWNER_USERNAME}! You're authenticated." in r.stdout, r
        return r

    @property
    def session_path(self):
        return self.config_dir / "session"

    @property
    def url_path(self):
        return self.config_dir / "url"

    def token(self):
        return self.session_path.read_text().strip()

    def url(self):
        return self.url_path.read_text().strip()

    def api(self):
        return Api(self.url(), token=self.token(), verify=self.ctx.certs.ca)

    # -- wsproxy helpers

    def ls_json(self):
        r = self.run("wsproxy", "ls", "-o", "json")
        assert r.rc == 0, r
        data = json.loads(r.stdout)
        assert isinstance(data, list), r
        return data

    def ls_table(self, *extra):
        r = self.run("wsproxy", "ls", *extra)
        assert r.rc == 0, r
        return parse_table(r.stdout)

    def status(self, name):
        """Status string of proxy `name` per `coder wsproxy ls -o json` (None if absent)."""
        for p in self.ls_json():
            if p["name"] == name:
                return p["status"]["status"]
        return None

    def wait_status(self, name, status, timeout=15.0, interval=0.25):
        last = {}

        def check():
            last["v"] = self.status(name)
            return last["v"] == status

        try:
            wait_for(check, timeout, interval, f"`coder wsproxy ls` shows {name} {status}")
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\n  last status: {last.get('v')!r}") from None


class Stack:
    """A running primary with an Owner logged in through the CLI."""

    def __init__(self, ctx, primary, client):
        self.ctx = ctx
        self.primary = primary
        self.client = client
        self.api = client.api()

    def create_proxy(self, name=None, display_name=None, icon="/emojis/1f5fa.png"):
        """Create a proxy through the API; return (proxy json, token)."""
        name = name or self.ctx.unique("p")
        r = self.api.post("/api/v2/workspaceproxies",
                          json={"name": name, "display_name": display_name or name,
                                "icon": icon})
        assert r.status_code == 201, (r.status_code, r.text)
        body = r.json()
        return body["proxy"], body["proxy_token"]

    def proxies(self):
        r = self.api.get("/api/v2/workspaceproxies")
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["regions"]

    def proxy(self, name):
        for p in self.proxies():
            if p["name"] == name:
                return p
        return None

    def status(self, name):
        p = self.proxy(name)
        return p["status"]["status"] if p else None

    def wait_status(self, name, status, timeout=15.0, interval=0.1):
        last = {}

        def check():
            last["v"] = self.proxy(name)
            return last["v"] is not None and last["v"]["status"]["status"] == status

        try:
            wait_for(check, timeout, interval, f"API shows proxy {name} {status}")
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}\n  last proxy: {last.get('v')!r}") from None
        return last["v"]

    def snapshot(self):
        return proxies_snapshot(self.proxies())

    def start_proxy(self, token, **kw):
        return self.ctx.wsproxy(self.primary.url, token, **kw)

    def create_workspace(self, name, *args):
        """`coder create NAME ARGS...`; returns the agent token it prints once."""
        r = self.client.run("create", name, *args)
        assert r.rc == 0, r
        return r.stdout.split("Agent token: ", 1)[1].split()[0]

    def start_agent(self, token, name="agent", region="primary", extra_env=None, timeout=20.0):
        """Starts `coder agent` for a workspace and, unless region is None, waits until it
        holds a tunnel to that region (its log line "connected to URL (REGION)")."""
        agent = self.ctx.process(name, ["agent"], {"CODER_AGENT_URL": self.primary.url,
                                                   "CODER_AGENT_TOKEN": token,
                                                   **(extra_env or {})})
        agent.start()
        if region is not None:
            def up():  # "connected to URL (REGION)"; a failed attempt names the region too
                return any("connected to " in ln and ln.endswith(f"({region})")
                           for ln in agent.stderr().splitlines())

            wait_for(up, timeout, 0.05, f"agent tunnel to {region}")
        return agent


# Fields that identify what is stored about a proxy (status and timestamps of the synthetic
# primary entry are volatile and excluded).
_STABLE_FIELDS = ("id", "name", "display_name", "icon_url", "path_app_url", "wildcard_hostname",
                  "derp_enabled", "derp_only", "deleted")


def proxies_snapshot(regions):
    out = []
    for p in regions:
        row = {k: p.get(k) for k in _STABLE_FIELDS}
        if p.get("name") != "primary":
            row["created_at"] = p.get("created_at")
            row["updated_at"] = p.get("updated_at")
        out.append(row)
    return sorted(out, key=lambda r: str(r["id"]))


# What store_snapshot reads, per table: the columns left out, because a request that fails may
# still change them. Authenticating a session stamps its key's last_used and its user's
# last_seen_at / updated_at (at most hourly, as Coder's API-key middleware does) before the
# handler runs; that is not something the failed request stored.
_STORE_TABLES = {
    "workspace_proxies": (),  # every column, token_hashed_secret and updated_at included
    "users": ("last_seen_at", "updated_at"),
    "api_keys": ("last_used",),
    # A running proxy's register loop rewrites its replica row (and its proxy's updated_at)
    # every few seconds: compare snapshots only while no proxy runs.
    "replicas": (),
    "site_configs": (),  # the primary region's display name and icon live here
}


def store_snapshot(db_path):
    """The rows a failed request must leave alone, read from the primary's SQLite store
    (<config dir>/coder.db) read-only while it runs: {table: sorted [{column: value}]}.
    A response is sent after its write commits, so a snapshot taken after it sees the write."""
    import sqlite3

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        out = {}
        for table, volatile in _STORE_TABLES.items():
            cur = db.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            rows = [{c: v for c, v in zip(cols, r) if c not in volatile} for r in cur]
            out[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
        return out
    finally:
        db.close()


class WsProxy:
    """`coder wsproxy server` configured with exactly the seed document's variables."""

    def __init__(self, ctx, primary_url, token, *, name="newyork", tls=True, http=True,
                 prometheus=False, wildcard=True, access_url=None, ssl_cert_file=True,
                 extra_env=None, extra_args=(), ready="https", http_port=None, tls_port=None,
                 env_exact=None):
        """env_exact: use exactly these variables (plus PATH/HOME) instead of the seed's set,
        e.g. to start from a --config file; ports/URLs are still computed from the other
        arguments (pass http_port/tls_port to reuse a previous instance's ports)."""
        self.ctx = ctx
        self.name = name
        self.primary_url = primary_url
        self.token = token
        self.http_port = (http_port or free_port()) if http else None
        self.tls_port = (tls_port or free_port()) if tls else None
        self.metrics_port = free_port() if prometheus else None
        self.http_url = f"http://127.0.0.1:{self.http_port}" if http else None
        self.https_url = f"https://127.0.0.1:{self.tls_port}" if tls else None
        self.url = access_url or self.https_url or self.http_url
        self.ready = ready if tls else "http"
        env = {
            "CODER_PRIMARY_ACCESS_URL": primary_url,
            "CODER_PROXY_SESSION_TOKEN": token,
            "CODER_HTTP_ADDRESS": f"127.0.0.1:{self.http_port}" if http else "",
            "CODER_ACCESS_URL": self.url,
        }
        if wildcard:
            wport = self.tls_port or self.http_port
            self.wildcard = f"*.{name}.localhost:{wport}"
            env["CODER_WILDCARD_ACCESS_URL"] = self.wildcard
        else:
            self.wildcard = None
        if tls:
            env.update({
                "CODER_TLS_ADDRESS": f"127.0.0.1:{self.tls_port}",
                "CODER_TLS_ENABLE": "true",
                "CODER_TLS_CLIENT_AUTH": "none",
                "CODER_TLS_CERT_FILE": ctx.certs.server_cert,
                "CODER_TLS_KEY_FILE": ctx.certs.server_key,
            })
        if ssl_cert_file:
            env["SSL_CERT_FILE"] = ctx.certs.ca
        if prometheus:
            env["CODER_PROMETHEUS_ENABLE"] = "true"
            env["CODER_PROMETHEUS_ADDRESS"] = f"127.0.0.1:{self.metrics_port}"
        env.update(extra_env or {})
        self.env = env
        self.proc = ctx.process(f"wsproxy-{name}", ["wsproxy", "server", *extra_args],
                                env if env_exact is None else env_exact)

    def healthz_ok(self):
        if self.ready == "https":
            r = http_get(self.https_url + "/healthz", verify=self.ctx.certs.ca, timeout=2)
        else:
            r = http_get(self.http_url + "/healthz", timeout=2)
        return r.status_code == 200

    def start(self, wait=True, timeout=15.0):
        self.proc.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=15.0):
        def ready():
            if not self.proc.running():
                raise Abort(f"wsproxy {self.name} exited with {self.proc.returncode} before "
                            f"it was ready:\n{self.proc.tail(30)}")
            return self.healthz_ok()

        wait_for(ready, timeout, 0.05, f"wsproxy {self.name} /healthz -> 200")

    def expect_exit(self, timeout=10.0):
        """Wait for the process to exit by itself; return (rc, stderr)."""
        rc = self.proc.wait(timeout)
        return rc, self.proc.stderr()

    def stop(self):
        return self.proc.stop()

    def kill9(self):
        return self.proc.kill9()

    def metrics(self):
        r = http_get(f"http://127.0.0.1:{self.metrics_port}/", timeout=5)
        assert r.status_code == 200, r.text
        return r.text


# --------------------------------------------------------------------------------------------
# CLI output parsing


def parse_table(text):
    """Parse a CLI table: header row of UPPER-CASE column names separated by 2+ spaces, rows
    aligned under the header. Returns a list of {lower-case header: cell}. Cells are sliced
    by the header's column offsets, so empty cells (an unregistered proxy's URL) work."""
    lines = [ln.rstrip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    if not lines:
        return []
    header = lines[0]
    cols = [(m.start(), m.group(0)) for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = []
    for ln in lines[1:]:
        row = {}
        for i, (start, name) in enumerate(cols):
            end = cols[i + 1][0] if i + 1 < len(cols) else None
            row[name.lower()] = (ln[start:end] if end else ln[start:]).strip()
        rows.append(row)
    return rows


def table_header(text):
    lines = [ln for ln in strip_ansi(text).splitlines() if ln.strip()]
    return re.split(r"\s{2,}", lines[0].strip()) if lines else []


TEXT_ROW_RE = re.compile(r"^(\d+): (\S+) (\S*) (\S+)$")


def parse_ls_text(text):
    """Parse `coder wsproxy ls -o text`: a 'Workspace Proxies:' line, then per proxy
    '<i>: <name> <url> <status>' followed by '\tErr: ...' / '\tWarn: ...' lines.
    Returns [{name, url, status, errors[], warnings[]}]."""
    lines = strip_ansi(text).splitlines()
    assert lines and lines[0].strip() == "Workspace Proxies:", text
    out = []
    last = None
    for ln in lines[1:]:
        if not ln.strip():
            continue
        m = TEXT_ROW_RE.match(ln.strip())
        if m and not ln.startswith("\t"):
            out.append({"index": int(m.group(1)), "name": m.group(2), "url": m.group(3),
                        "status": m.group(4), "errors": [], "warnings": []})
            last = None
            continue
        s = ln.strip()
        assert out, f"detail line before any proxy: {ln!r}\n{text}"
        if s.startswith("Err:"):
            out[-1]["errors"].append(s[4:].strip())
            last = out[-1]["errors"]
        elif s.startswith("Warn:"):
            out[-1]["warnings"].append(s[5:].strip())
            last = out[-1]["warnings"]
        elif last:
            # A message with an embedded newline (Coder's "unexpected status code" error).
            last[-1] += "\n" + s
        else:
            raise AssertionError(f"unexpected line in ls -o text: {ln!r}\n{text}")
    return out


def new_uuid():
    return str(uuid.uuid4())
