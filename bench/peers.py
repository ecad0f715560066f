#!/usr/bin/python3
"""What every data-plane benchmark starts (issue 4): the app, ours and the peers, all on loopback.

Each start_* function starts its processes through a Procs (stopped by PID at the end) and
returns the URL a client uses plus the headers it needs (a list, or a function returning a fresh
list: our signed app tokens live a minute). Topology, for every setup:
client -> region -> workspace side -> app, TLS from the client and TLS between the two hops.

  ours     client -TLS-> coder wsproxy server => agent tunnel (TLS, HTTP/2) => coder agent -> app
  nginx    client -TLS-> nginx -TLS (keep-alive upstream)-> nginx -> app
  haproxy  client -TLS-> haproxy -TLS (http-reuse)-> haproxy -> app
  direct   client -> app (the physical reference)

The app is nginx serving static files, so it is never the bottleneck."""
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from control_plane import free_port

HELLO = b"hello, world\n"


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


class Procs:
    """Everything the benchmark starts, stopped by PID at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.cleanup = []  # directories removed at the end
        # A benchmark stopped with SIGTERM (or Ctrl-C) still runs its `finally: stop_all()`.
        signal.signal(signal.SIGTERM, _exit_on_signal)

    def start(self, name, args, env=None):
        out = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        out.close()
        self.procs.append((name, p))
        return p

    def pid(self, name):
        """The PID of the process started under this name (the last one, if several)."""
        return [p.pid for n, p in self.procs if n == name][-1]

    def log(self, name):
        with open(os.path.join(self.tmp, f"{name}.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop_all(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 5
        for _, p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for d in self.cleanup:
            shutil.rmtree(d, ignore_errors=True)


class Setup:
    """How a client reaches the app through one setup: url(path) and the headers to send."""

    def __init__(self, base, headers=None):
        self.base = base
        self._headers = headers or []

    def url(self, path="hello"):
        return self.base + path

    def headers(self):
        """The request headers (for ours a fresh app token: they live a minute)."""
        return self._headers() if callable(self._headers) else list(self._headers)


def wait_port(port, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    with open(os.path.join(tmp, "both.pem"), "w") as f:  # HAProxy wants them in one file
        f.write(open(cert).read() + open(key).read())
    return cert, key


# ---- the app and the peers ----

def nginx_conf(tmp, name, server_block, main=""):
    """An nginx.conf for one instance in tmp/name (one worker, no access log); main goes in the
    main context (e.g. "master_process off;")."""
    root = os.path.join(tmp, name)
    os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
    conf = os.path.join(root, "nginx.conf")
    t = os.path.join(root, "tmp")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
worker_rlimit_nofile 19500;
{main}
events {{ worker_connections 19000; }}
http {{
    access_log off;
    client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
    uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
    keepalive_requests 1000000;
    client_max_body_size 0;  # bulk uploads (bench/bulk.py) pass through every hop
    {server_block}
}}
""")
    return conf


def start_app(procs, tmp, big_mib=0):
    """The app: nginx serving /hello (13 bytes) and, with big_mib, /big (that many MiB) and
    PUT /upload (the body is read whole, into memory-backed files, then answered 201/204).
    Returns its port."""
    port = free_port()
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "hello"), "wb") as f:
        f.write(HELLO)
    extra = ""
    if big_mib:
        shm = tempfile.mkdtemp(prefix="coder-bench-app-", dir="/dev/shm")
        procs.cleanup.append(shm)
        with open(os.path.join(shm, "big"), "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(big_mib):
                f.write(chunk)
        up = os.path.join(shm, "up")
        os.makedirs(os.path.join(up, "tmp"))
        os.chmod(shm, 0o755)
        for d in (up, os.path.join(up, "tmp")):
            os.chmod(d, 0o777)  # nginx workers run as www-data when started as root
        extra = f"""location = /big {{ root {shm}; }}
        location = /upload {{ root {up}; dav_methods PUT; client_max_body_size 0;
                              client_body_temp_path {up}/tmp; }}"""
    conf = nginx_conf(tmp, "app", f"""server {{
        listen 127.0.0.1:{port};
        location / {{ root {www}; }}
        {extra}
    }}""")
    procs.start("app", ["nginx", "-c", conf, "-e", "stderr"])
    wait_port(port)
    return port


def start_nginx_pair(procs, tmp, app_port, cert, key):
    front, back = free_port(), free_port()
    tls = f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;"
    conf = nginx_conf(tmp, "nginx-back", f"""upstream app {{ server 127.0.0.1:{app_port};
        keepalive 256; }}
    server {{
        listen 127.0.0.1:{back} ssl; {tls}
        location / {{ proxy_pass http://app; proxy_http_version 1.1;
                      proxy_set_header Connection ""; }}
    }}""")
    procs.start("nginx-back", ["nginx", "-c", conf, "-e", "stderr"])
    conf = nginx_conf(tmp, "nginx-front", f"""upstream back {{ server 127.0.0.1:{back};
        keepalive 256; }}
    server {{
        listen 127.0.0.1:{front} ssl http2; {tls}
        location / {{ proxy_pass https://back; proxy_http_version 1.1;
                      proxy_set_header Connection ""; proxy_ssl_session_reuse on; }}
    }}""")
    procs.start("nginx-front", ["nginx", "-c", conf, "-e", "stderr"])
    wait_port(back)
    wait_port(front)
    return Setup(f"https://127.0.0.1:{front}/")


def start_haproxy_pair(procs, tmp, app_port, both, maxconn=9000):
    front, back = free_port(), free_port()
    common = f"""global
    nbthread 1
    maxconn {maxconn}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
"""
    for name, text in (("haproxy-back", f"""{common}
frontend f
    bind 127.0.0.1:{back} ssl crt {both}
    default_backend b
backend b
    server app 127.0.0.1:{app_port}
"""), ("haproxy-front", f"""{common}
frontend f
    bind 127.0.0.1:{front} ssl crt {both} alpn h2,http/1.1
    default_backend b
backend b
    server back 127.0.0.1:{back} ssl verify none
""")):
        cfg = os.path.join(tmp, f"{name}.cfg")
        with open(cfg, "w") as f:
            f.write(text)
        procs.start(name, ["haproxy", "-db", "-f", cfg])
    wait_port(back)
    wait_port(front)
    return Setup(f"https://127.0.0.1:{front}/")


def start_nghttpx_pair(procs, tmp, app_port, cert, key):
    """The nghttp2 project's proxy in the same shape: client -TLS (h2 or http/1.1)-> nghttpx
    -TLS, HTTP/2 (one multiplexed connection, as our tunnel)-> nghttpx -> app."""
    front, back = free_port(), free_port()
    common = ["nghttpx", "--conf=/dev/null", "--workers=1", "--no-ocsp",
              "--backend-keep-alive-timeout=60s"]
    procs.start("nghttpx-back", [*common, f"--frontend=127.0.0.1,{back}",
                                 f"--backend=127.0.0.1,{app_port}",
                                 f"--errorlog-file={tmp}/nghttpx-back.log", key, cert])
    procs.start("nghttpx-front", [*common, f"--frontend=127.0.0.1,{front}",
                                  f"--backend=127.0.0.1,{back};;tls;proto=h2", "--insecure",
                                  f"--errorlog-file={tmp}/nghttpx-front.log", key, cert])
    wait_port(back)
    wait_port(front)
    return Setup(f"https://127.0.0.1:{front}/")


def start_ours(procs, tmp, coder, app_port, cert, key, proxy_args=(), wrap=None, proxy_port=None,
               access_url=None, primary_tls=False):
    """A primary, one proxy (TLS, with proxy_args), a workspace whose app is the nginx app, its
    agent holding a tunnel to the proxy. Returns a Setup for the app at the proxy, which also
    carries primary_url, proxy_url, session (the admin's token), client_env (a coder CLI
    environment logged in as the admin) and proxy_env (what restarts the proxy).
    wrap maps "primary", "wsproxy" or "agent" to a command prefix (e.g. valgrind). proxy_port
    and access_url let a relay stand in front of the proxy: the agent dials access_url.
    primary_tls serves the primary over TLS only."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "SSL_CERT_FILE": cert}
    wrap = wrap or {}
    pport = free_port()
    if primary_tls:
        purl = f"https://127.0.0.1:{pport}"
        listen = ["--http-address", "", "--tls-enable", "--tls-address", f"127.0.0.1:{pport}",
                  "--tls-cert-file", cert, "--tls-key-file", key]
    else:
        purl = f"http://127.0.0.1:{pport}"
        listen = ["--http-address", f"127.0.0.1:{pport}"]
    procs.start("primary", [*wrap.get("primary", ()), coder, "server", *listen,
                            "--access-url", purl],
                dict(env, CODER_CONFIG_DIR=os.path.join(tmp, "primary")))
    wait_port(pport)
    cenv = dict(env, CODER_CONFIG_DIR=os.path.join(tmp, "client"))
    subprocess.run([coder, "login", purl, "--first-user-username", "admin",
                    "--first-user-email", "admin@example.com",
                    "--first-user-password", "SomeSecurePassword!1", "--first-user-trial=false"],
                   env=cenv, check=True, capture_output=True)
    token = subprocess.run([coder, "wsproxy", "create", "--name", "bench", "--no-prompt",
                            "--only-token"],
                           env=cenv, check=True, capture_output=True, text=True).stdout.strip()
    xport = proxy_port or free_port()
    xurl = access_url or f"https://127.0.0.1:{xport}"
    penv = dict(env, CODER_PRIMARY_ACCESS_URL=purl, CODER_PROXY_SESSION_TOKEN=token,
                CODER_HTTP_ADDRESS="", CODER_TLS_ENABLE="true",
                CODER_TLS_ADDRESS=f"127.0.0.1:{xport}", CODER_ACCESS_URL=xurl,
                CODER_TLS_CERT_FILE=cert, CODER_TLS_KEY_FILE=key)
    procs.start("wsproxy", [*wrap.get("wsproxy", ()), coder, "wsproxy", "server", *proxy_args],
                penv)
    wait_port(xport)
    out = subprocess.run([coder, "create", "bench", "--app", f"site=http://127.0.0.1:{app_port}"],
                         env=cenv, check=True, capture_output=True, text=True).stdout
    agent_token = out.split("Agent token: ", 1)[1].split()[0]
    procs.start("agent", [*wrap.get("agent", ()), coder, "agent"],
                dict(env, CODER_AGENT_URL=purl, CODER_AGENT_TOKEN=agent_token))
    end = time.monotonic() + 30
    while "(bench)" not in procs.log("agent"):
        if time.monotonic() > end:
            raise RuntimeError("the agent did not reach the proxy:\n" + procs.log("agent"))
        time.sleep(0.05)
    session = open(os.path.join(tmp, "client", "session")).read().strip()
    base = f"{xurl}/@admin/bench/apps/site/"

    def cookie():
        """A fresh signed app token: the proxy then decides locally."""
        r = subprocess.run(["curl", "-sS", "-k", "-D", "-", "-o", "/dev/null", "-H",
                            f"Coder-Session-Token: {session}", base + "hello"],
                           check=True, capture_output=True, text=True).stdout
        m = re.search(r"coder_signed_app_token=([^;]+)", r)
        if not m:
            raise RuntimeError("no app token cookie:\n" + r)
        return [f"Cookie: coder_signed_app_token={m.group(1)}"]

    ours = Setup(base, cookie)
    ours.primary_url, ours.proxy_url, ours.session = purl, xurl, session
    ours.client_env, ours.proxy_env = cenv, penv
    return ours


def write_json(path, doc):
    """A figure script's results file (nothing when path is None)."""
    if not path:
        return
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def versions(coder):
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal here
            return "not found"
    return {"coder": first([coder, "version"]), "nginx": first(["nginx", "-v"]),
            "haproxy": first(["haproxy", "-v"]), "wrk": first(["wrk", "-v"]),
            "h2load": first(["h2load", "--version"]), "nghttpx": first(["nghttpx", "--version"]),
            "openssh": first(["ssh", "-V"]), "curl": first(["curl", "--version"]),
            "openssl": first(["openssl", "version"])}


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}


# ---- OpenSSH: the reverse tunnel (the agent's shape) and local port forwarding ----

def start_sshd(procs, tmp):
    """An sshd of our own on a free loopback port, with a fresh host key and one client key
    (root, key only). Returns (port, the ssh command prefix that logs in to it)."""
    d = os.path.join(tmp, "ssh")
    os.makedirs(d, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        os.path.join(d, name)], check=True)
    shutil.copy(os.path.join(d, "client.pub"), os.path.join(d, "authorized_keys"))
    port = free_port()
    cfg = os.path.join(d, "sshd_config")
    with open(cfg, "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
LogLevel ERROR
""")
    procs.start("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", cfg])
    wait_port(port)
    ssh = ["ssh", "-N", "-i", os.path.join(d, "client"), "-p", str(port),
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "LogLevel=ERROR", "-o", "ExitOnForwardFailure=yes",
           "-o", "ServerAliveInterval=15"]
    return port, ssh


def start_ssh_reverse(procs, tmp, app_port, sshd=None):
    """The workspace side dials out (`ssh -R`) to the region's sshd, which listens for users:
    client -> sshd =SSH=> ssh -> app, the shape of our agent tunnel (the user's hop is plain
    TCP: sshd forwards bytes, it speaks no TLS)."""
    _, ssh = sshd or start_sshd(procs, tmp)
    rport = free_port()
    procs.start("ssh-R", [*ssh, "-R", f"127.0.0.1:{rport}:127.0.0.1:{app_port}", "root@127.0.0.1"])
    wait_port(rport)
    return Setup(f"http://127.0.0.1:{rport}/")


def start_ssh_local(procs, tmp, app_port, sshd=None):
    """Port forwarding as users do it with OpenSSH (`ssh -L`): client -> ssh =SSH=> sshd -> app."""
    _, ssh = sshd or start_sshd(procs, tmp)
    lport = free_port()
    procs.start("ssh-L", [*ssh, "-L", f"127.0.0.1:{lport}:127.0.0.1:{app_port}", "root@127.0.0.1"])
    wait_port(lport)
    return Setup(f"http://127.0.0.1:{lport}/")


# ---- pagekite: a relay (front end) and a connector that dials out to it ----

PAGEKITE_NAME = "bench.test"


def start_pagekite(procs, tmp, app_port):
    """pagekite's front end (the relay users reach) and its connector beside the app, which
    dials out to the front end, as our agent does. Both hops are plain TCP: Debian's pagekite
    1.5.2 crashes on TLS (a Python 3 bytes/str error in its SNI code, seen here), so this peer
    does less work than the others. Users reach the kite by its name in Host."""
    port = free_port()
    secret = "bench-" + os.urandom(8).hex()
    common = ["pagekite", "--clean", "--nullui", "--nocrashreport"]
    procs.start("pagekite-front", [*common, "--isfrontend", "--host=127.0.0.1",
                                   f"--ports={port}", "--protos=http",
                                   f"--domain=http:{PAGEKITE_NAME}:{secret}",
                                   f"--logfile={tmp}/pagekite-front.log"])
    wait_port(port)
    procs.start("pagekite-connector", [*common, f"--frontend=127.0.0.1:{port}",
                                       f"--service_on=http:{PAGEKITE_NAME}:127.0.0.1:"
                                       f"{app_port}:{secret}",
                                       f"--logfile={tmp}/pagekite-connector.log"])
    setup = Setup(f"http://127.0.0.1:{port}/", [f"Host: {PAGEKITE_NAME}"])
    end = time.monotonic() + 20
    while True:  # the kite is served once the connector has registered it
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2",
                            "-H", f"Host: {PAGEKITE_NAME}", setup.url()],
                           capture_output=True, text=True)
        if r.stdout == "200":
            return setup
        if time.monotonic() > end:
            raise RuntimeError("pagekite: the kite was not served within 20 s")
        time.sleep(0.2)
