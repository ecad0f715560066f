#!/usr/bin/python3
"""Data-plane benchmarks against peers (issue 4), all on loopback in one run.

The topology is client -> region -> workspace side -> app. The app is nginx serving static
files, so it is never the bottleneck. Each setup has TLS from the client and TLS between its
two hops:

  ours     client -TLS-> coder wsproxy server => agent tunnel (TLS, HTTP/2) => coder agent -> app
  nginx    client -TLS-> nginx -TLS (keep-alive upstream)-> nginx -> app
  haproxy  client -TLS-> haproxy -TLS (http-reuse)-> haproxy -> app
  direct   client -> app (the physical reference)

Figure 1 (this file so far): small-request rate and latency with wrk (HTTP/1.1 keep-alive) at
fixed concurrencies; each setup runs in turn, each figure is the median of several runs.
Results go to a JSON file with, per figure, our value, each peer's, the goal and one ratio
oriented so that above 1.0 is better than the better of nginx and HAProxy.

Usage: bench/dataplane.py [--bin build/coder] [--json out.json] [--smoke]
--smoke: one short run of ours and direct only, to prove the harness works (make test)."""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from control_plane import free_port

HELLO = b"hello, world\n"


class Procs:
    """Everything the benchmark starts, stopped by PID at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, name, args, env=None):
        out = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        out.close()
        self.procs.append((name, p))
        return p

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

def nginx_conf(tmp, name, server_block):
    root = os.path.join(tmp, name)
    os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
    conf = os.path.join(root, "nginx.conf")
    t = os.path.join(root, "tmp")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
    uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
    keepalive_requests 1000000;
    {server_block}
}}
""")
    return conf


def start_app(procs, tmp):
    port = free_port()
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "hello"), "wb") as f:
        f.write(HELLO)
    conf = nginx_conf(tmp, "app", f"""server {{
        listen 127.0.0.1:{port};
        location / {{ root {www}; }}
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
        listen 127.0.0.1:{front} ssl; {tls}
        location / {{ proxy_pass https://back; proxy_http_version 1.1;
                      proxy_set_header Connection ""; proxy_ssl_session_reuse on; }}
    }}""")
    procs.start("nginx-front", ["nginx", "-c", conf, "-e", "stderr"])
    wait_port(back)
    wait_port(front)
    return f"https://127.0.0.1:{front}/hello", []


def start_haproxy_pair(procs, tmp, app_port, both):
    front, back = free_port(), free_port()
    common = """global
    nbthread 1
    maxconn 9000
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
    bind 127.0.0.1:{front} ssl crt {both}
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
    return f"https://127.0.0.1:{front}/hello", []


def start_ours(procs, tmp, coder, app_port, cert, key):
    """A primary, one proxy (TLS), a workspace whose app is the nginx app, its agent holding a
    tunnel to the proxy. Returns the app URL at the proxy and the cookie that opens it."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "SSL_CERT_FILE": cert}
    pport = free_port()
    purl = f"http://127.0.0.1:{pport}"
    procs.start("primary", [coder, "server", "--http-address", f"127.0.0.1:{pport}",
                            "--access-url", purl],
                dict(env, CODER_CONFIG_DIR=os.path.join(tmp, "primary")))
    wait_port(pport)
    cenv = dict(env, CODER_CONFIG_DIR=os.path.join(tmp, "client"))
    subprocess.run([coder, "login", purl, "--first-user-username", "admin",
                    "--first-user-email", "admin@example.com",
                    "--first-user-password", "SomeSecurePassword!1", "--first-user-trial=false"],
                   env=cenv, check=True, capture_output=True)
    token = subprocess.run([coder, "wsproxy", "create", "--name", "bench", "--only-token"],
                           env=cenv, check=True, capture_output=True, text=True).stdout.strip()
    xport = free_port()
    xurl = f"https://127.0.0.1:{xport}"
    procs.start("wsproxy", [coder, "wsproxy", "server"],
                dict(env, CODER_PRIMARY_ACCESS_URL=purl, CODER_PROXY_SESSION_TOKEN=token,
                     CODER_HTTP_ADDRESS="", CODER_TLS_ENABLE="true",
                     CODER_TLS_ADDRESS=f"127.0.0.1:{xport}", CODER_ACCESS_URL=xurl,
                     CODER_TLS_CERT_FILE=cert, CODER_TLS_KEY_FILE=key))
    wait_port(xport)
    out = subprocess.run([coder, "create", "bench", "--app", f"site=http://127.0.0.1:{app_port}"],
                         env=cenv, check=True, capture_output=True, text=True).stdout
    agent_token = out.split("Agent token: ", 1)[1].split()[0]
    procs.start("agent", [coder, "agent"],
                dict(env, CODER_AGENT_URL=purl, CODER_AGENT_TOKEN=agent_token))
    end = time.monotonic() + 30
    while "(bench)" not in procs.log("agent"):
        if time.monotonic() > end:
            raise RuntimeError("the agent did not reach the proxy:\n" + procs.log("agent"))
        time.sleep(0.05)
    session = open(os.path.join(tmp, "client", "session")).read().strip()
    url = f"{xurl}/@admin/bench/apps/site/hello"

    def cookie():
        """A fresh signed app token (they live a minute): the proxy then decides locally."""
        r = subprocess.run(["curl", "-sS", "-k", "-D", "-", "-o", "/dev/null", "-H",
                            f"Coder-Session-Token: {session}", url],
                           check=True, capture_output=True, text=True).stdout
        m = re.search(r"coder_signed_app_token=([^;]+)", r)
        if not m:
            raise RuntimeError("no app token cookie:\n" + r)
        return [f"Cookie: coder_signed_app_token={m.group(1)}"]

    return url, cookie


# ---- wrk ----

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url, conns, secs, headers):
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True,
                         timeout=secs + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        lat[pct] = float(m.group(1)) * _UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    return rps, lat["50"], lat["99"]


def versions(coder):
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal here
            return "not found"
    return {"coder": first([coder, "version"]), "nginx": first(["nginx", "-v"]),
            "haproxy": first(["haproxy", "-v"]), "wrk": first(["wrk", "-v"]),
            "openssl": first(["openssl", "version"])}


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/coder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=3)
    args = ap.parse_args()
    coder = os.path.abspath(args.bin)
    for tool in ("nginx", "wrk", "openssl", "curl") + (() if args.smoke else ("haproxy",)):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found; run `make bench` (it installs the peers)")
    conc = [1] if args.smoke else [1, 64, 256]
    runs, secs = (1, 1) if args.smoke else (args.runs, args.secs)
    tmp = tempfile.mkdtemp(prefix="coder-bench-")
    os.chmod(tmp, 0o755)  # nginx workers (www-data when started as root) read the app's files
    procs = Procs(tmp)
    results = {}
    try:
        cert, key = make_cert(tmp)
        app = start_app(procs, tmp)
        setups = {"direct": (f"http://127.0.0.1:{app}/hello", [])}
        url, cookie = start_ours(procs, tmp, coder, app, cert, key)
        setups["ours"] = (url, cookie)
        if not args.smoke:
            setups["nginx"] = start_nginx_pair(procs, tmp, app, cert, key)
            setups["haproxy"] = start_haproxy_pair(procs, tmp, app, os.path.join(tmp, "both.pem"))
        for c in conc:
            samples = {name: [] for name in setups}
            for _ in range(runs):  # setups alternate within each round
                for name, (u, hdrs) in setups.items():
                    h = hdrs() if callable(hdrs) else hdrs
                    samples[name].append(wrk(u, c, secs, h))
            for name, s in samples.items():
                results.setdefault(name, {})[c] = {
                    "rps": statistics.median(x[0] for x in s),
                    "p50_ms": statistics.median(x[1] for x in s),
                    "p99_ms": statistics.median(x[2] for x in s)}
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {}
    for c in conc:
        peers = {n: results[n][c] for n in results if n != "ours"}
        best = [peers[n] for n in ("nginx", "haproxy") if n in peers]
        ours = results["ours"][c]
        best_rps = max((p["rps"] for p in best), default=None)
        best_p99 = min((p["p99_ms"] for p in best), default=None)
        figures[f"small_requests_c{c}_rps"] = {
            "unit": "requests/s", "ours": ours["rps"],
            "peers": {n: p["rps"] for n, p in peers.items()},
            "goal": ">= 1.0x the better of nginx and HAProxy",
            "ratio": round(ours["rps"] / best_rps, 3) if best_rps else None}
        figures[f"small_requests_c{c}_p99_ms"] = {
            "unit": "ms", "ours": ours["p99_ms"],
            "peers": {n: p["p99_ms"] for n, p in peers.items()},
            "goal": "<= the better of nginx and HAProxy",
            "ratio": round(best_p99 / ours["p99_ms"], 3) if best_p99 else None}
        figures[f"small_requests_c{c}_p50_ms"] = {
            "unit": "ms", "ours": ours["p50_ms"],
            "peers": {n: p["p50_ms"] for n, p in peers.items()},
            "goal": None, "ratio": None}
    doc = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "machine": machine(),
           "versions": versions(coder), "figures": figures}
    print(f"{'figure':34} {'ours':>10} " + " ".join(f"{n:>10}" for n in results if n != "ours")
          + f" {'ratio':>7}")
    for k, f in figures.items():
        print(f"{k:34} {f['ours']:>10.2f} "
              + " ".join(f"{v:>10.2f}" for v in f["peers"].values())
              + f" {f['ratio'] if f['ratio'] is not None else '-':>7}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
