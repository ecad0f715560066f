#!/usr/bin/python3
"""Idle cost (issue 4, figure 3): user-space memory per idle connection, on loopback.

(a) Per idle TLS keep-alive client connection. A helper process (bench/idle_client.py) opens N
    TLS connections to the region, sends one GET /hello on each, reads the whole response and
    holds them all idle. The figure is (RSS of the region process after - before) / the number
    of connections that succeeded, in bytes; the Private_Dirty delta (smaps_rollup) is a second
    figure. The region process: ours = `coder wsproxy server`; nginx = the front nginx's worker;
    haproxy = the front haproxy. Before "before", each region serves a few hundred requests on a
    few connections (kept open), so pools allocated on first use are not charged to the idle
    connections.
(b) Per idle agent tunnel. N workspaces are created through the API, each agent's tunnel ticket
    fetched from /api/v2/workspaceagents/me/regions, and the helper holds one tunnel per agent
    (TLS, the coder-tunnel upgrade, HTTP/2 with the helper as the server) to a second, fresh
    `coder wsproxy server` (so memory freed by (a) is not reused by the tunnels and hidden).
    Figure: its RSS delta / tunnels.

Each process's delta is taken once (a second round on the same process would reuse what the
first freed): memory deltas move little between runs, unlike rates.

HAProxy: global maxconn 10100 asks for 2 x 10100 + some descriptors, over the hard limit of
20000, and HAProxy 2.6 refuses to start unless `no strict-limits` is set; with it, it runs and
the idle connections use about 10,100 descriptors.

Usage: bench/idle.py [--bin build/coder] [--json out.json] [--smoke] [--conns N] [--tunnels N]
--smoke: 200 connections and 100 tunnels (make test proves the harness with it)."""
import argparse
import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from control_plane import free_port
from peers import (machine, make_cert, Procs, start_app, start_haproxy_pair, start_nginx_pair,
                   start_ours, versions, wait_port, write_json)

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "idle_client.py")
MIN_SUCCESS = 0.99
TUNNEL_REGION = "idle-tunnels"


# ---- memory of a process ----

def memory_kib(pid):
    """(VmRSS, Private_Dirty) of a process in KiB."""
    rss = dirty = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                dirty = int(line.split()[1])
    return rss, dirty


def only_child(pid):
    """The single child of a process (nginx's worker under its master)."""
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    if len(kids) != 1:
        raise RuntimeError(f"process {pid} has children {kids}, wanted one worker")
    return kids[0]


# ---- the helper ----

class Helper:
    """bench/idle_client.py run as a child; it speaks JSON lines (see its docstring)."""

    def __init__(self, procs, name, args):
        self.log = open(os.path.join(procs.tmp, f"{name}.log"), "ab")
        self.p = subprocess.Popen([sys.executable, CLIENT, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.log)
        self.buf = b""

    def read(self, timeout):
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                raise RuntimeError(f"the idle client said nothing in {timeout} s")
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the idle client exited ({self.p.wait()}); see its log")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def say(self, word):
        self.p.stdin.write(word.encode() + b"\n")
        self.p.stdin.flush()

    def finish(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def hold(procs, name, pid, client_args, n, settle=1.0):
    """Runs the helper against the region process pid: warm, before, open n, after.
    Returns the measured figures; raises when fewer than 99% of n succeeded."""
    h = Helper(procs, name, client_args)
    try:
        warm = h.read(60)
        if warm["failed"]:
            raise RuntimeError(f"{name}: warm-up failed: {warm['errors']}")
        time.sleep(settle)
        rss0, dirty0 = memory_kib(pid)
        h.say("go")
        opened = h.read(120)
        ok = opened["ok"]
        if ok < MIN_SUCCESS * n:
            raise RuntimeError(f"{name}: only {ok} of {n} connections succeeded: "
                               f"{opened['errors']}")
        time.sleep(settle)  # what the region does right after (TLS tickets, bookkeeping)
        rss1, dirty1 = memory_kib(pid)
        h.say("close")
        closed = h.read(60)
        if closed["lost"]:  # a region that dropped idle connections would look cheap
            raise RuntimeError(f"{name}: {closed['lost']} connections died while held")
    finally:
        h.finish()
    return {"n": ok, "failed": opened["failed"], "open_secs": opened["secs"],
            "rss_bytes": round((rss1 - rss0) * 1024 / ok),
            "private_dirty_bytes": round((dirty1 - dirty0) * 1024 / ok),
            "rss_before_kib": rss0, "rss_after_kib": rss1}


# ---- (a) idle client connections ----

def client_args(setup, n, warm, requests):
    """The helper's arguments for a Setup whose base is https://127.0.0.1:PORT/..."""
    hostport, _, path = setup.url().split("//", 1)[1].partition("/")
    host, port = hostport.rsplit(":", 1)
    args = ["conns", host, port, "--path", "/" + path, "--n", str(n), "--warm", str(warm),
            "--requests", str(requests), "--concurrency", "100"]
    for hdr in setup.headers():
        args += ["--header", hdr]
    return args


# ---- (b) idle agent tunnels ----

def api(conn, method, path, token, body=None):
    hdrs = {"Coder-Session-Token": token}
    if body is not None:
        body = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body, hdrs)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data)


def in_threads(count, nthreads, base_url, fn):
    """Runs fn(conn, i) for i in range(count) over nthreads keep-alive connections."""
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    errors = []

    def run(k):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            for i in range(k, count, nthreads):
                fn(conn, i)
        except Exception as e:  # noqa: BLE001 - re-raised below in the caller's thread
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def tunnel_tickets(ours, count):
    """Creates count workspaces (one agent each) and returns, per agent, its ticket for the
    region named TUNNEL_REGION, and the seconds each step took."""
    tokens = [None] * count
    t0 = time.monotonic()

    def create(conn, i):
        w = api(conn, "POST", "/api/v2/users/me/workspaces", ours.session,
                {"name": f"idle-{i}", "agents": [{"name": "main", "apps": []}]})
        tokens[i] = w["agent_token"]

    in_threads(count, 4, ours.primary_url, create)
    t1 = time.monotonic()
    tickets = [None] * count

    def ticket(conn, i):
        for g in api(conn, "GET", "/api/v2/workspaceagents/me/regions", tokens[i])["regions"]:
            if g.get("name") == TUNNEL_REGION and g.get("tunnel_ticket"):
                tickets[i] = g["tunnel_ticket"]
        if not tickets[i]:
            raise RuntimeError(f"no ticket for region {TUNNEL_REGION} (is it healthy?)")

    # The new region is listed (with tickets) once the primary has seen it healthy.
    conn = http.client.HTTPConnection(*ours.primary_url.split("//", 1)[1].rsplit(":", 1),
                                      timeout=30)
    end = time.monotonic() + 30
    while True:
        try:
            ticket(conn, 0)
            break
        except RuntimeError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    conn.close()
    in_threads(count, 4, ours.primary_url, ticket)
    return tickets, round(t1 - t0, 2), round(time.monotonic() - t1, 2)


def start_tunnel_region(procs, ours, coder, max_tunnels, wrap=()):
    """A second proxy (its own region), fresh, allowing max_tunnels tunnels (its command prefixed
    with wrap). Returns its port."""
    token = subprocess.run([coder, "wsproxy", "create", "--name", TUNNEL_REGION,
                            "--no-prompt", "--only-token"],
                           env=ours.client_env, check=True, capture_output=True,
                           text=True).stdout.strip()
    port = free_port()
    env = dict(ours.proxy_env, CODER_PROXY_SESSION_TOKEN=token,
               CODER_TLS_ADDRESS=f"127.0.0.1:{port}", CODER_ACCESS_URL=f"https://127.0.0.1:{port}")
    procs.start("wsproxy-tunnels", [*wrap, coder, "wsproxy", "server", "--max-agent-tunnels",
                                    str(max_tunnels)], env)
    wait_port(port)
    return port


# ---- the run ----

def fmt(v):
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/coder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--conns", type=int, default=None, help="idle client connections (10000)")
    ap.add_argument("--tunnels", type=int, default=None, help="idle agent tunnels (10000)")
    ap.add_argument("--massif", metavar="DIR", default=None,
                    help="run our proxies under valgrind massif, profiles in DIR (slow: use "
                         "with small --conns/--tunnels, to see what an idle one holds)")
    args = ap.parse_args()
    coder = os.path.abspath(args.bin)
    wrap = {}
    if args.massif:
        os.makedirs(args.massif, exist_ok=True)
        wrap = {name: ["valgrind", "--tool=massif", "--threshold=0.5",
                       f"--massif-out-file={os.path.abspath(args.massif)}/{name}.%p"]
                for name in ("wsproxy", "wsproxy-tunnels")}
    for tool in ("nginx", "haproxy", "openssl", "curl"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found; run `make bench` (it installs the peers)")
    nconns = args.conns or (200 if args.smoke else 10000)
    ntunnels = args.tunnels or (100 if args.smoke else 10000)
    warm_conns, warm_requests, warm_tunnels = 4, 100, 10
    tmp = tempfile.mkdtemp(prefix="coder-bench-idle-")
    os.chmod(tmp, 0o755)  # nginx workers (www-data when started as root) read the app's files
    procs = Procs(tmp)
    res, info = {}, {}
    try:
        cert, key = make_cert(tmp)
        app = start_app(procs, tmp)
        ours = start_ours(procs, tmp, coder, app, cert, key, wrap=wrap)
        nginx = start_nginx_pair(procs, tmp, app, cert, key)
        # The front HAProxy holds every idle connection: see the docstring for the limit.
        haproxy = start_haproxy_pair(procs, tmp, app, os.path.join(tmp, "both.pem"),
                                     maxconn=f"{nconns + 100}\n    no strict-limits")
        regions = {"ours": (ours, procs.pid("wsproxy")),
                   "nginx": (nginx, only_child(procs.pid("nginx-front"))),
                   "haproxy": (haproxy, procs.pid("haproxy-front"))}
        for name, (setup, pid) in regions.items():
            res[name] = hold(procs, f"client-{name}", pid,
                             client_args(setup, nconns, warm_conns, warm_requests), nconns)

        tport = start_tunnel_region(procs, ours, coder, ntunnels + warm_tunnels + 100,
                                    wrap.get("wsproxy-tunnels", ()))
        tickets, info["create_secs"], info["tickets_secs"] = tunnel_tickets(
            ours, ntunnels + warm_tunnels)
        tfile = os.path.join(tmp, "tickets")
        with open(tfile, "w") as f:
            f.write("\n".join(tickets) + "\n")
        res["tunnels"] = hold(procs, "client-tunnels", procs.pid("wsproxy-tunnels"),
                              ["tunnels", "127.0.0.1", str(tport), "--tickets", tfile,
                               "--n", str(ntunnels), "--warm", str(warm_tunnels),
                               "--concurrency", "100"], ntunnels, settle=2.0)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    peers = ("nginx", "haproxy")
    figures = {}
    for key, what in (("rss_bytes", "RSS"), ("private_dirty_bytes", "Private_Dirty")):
        ours_v = res["ours"][key]
        best = min(res[p][key] for p in peers)
        suffix = "" if key == "rss_bytes" else "_private_dirty"
        figures[f"idle_client_conn_bytes{suffix}"] = {
            "unit": "bytes per idle TLS keep-alive connection", "ours": ours_v,
            "peers": {p: res[p][key] for p in peers},
            "goal": ("<= 0.75x the better of nginx and HAProxy (issue: HAProxy ~15.8 KB, "
                     "nginx ~18.9 KB with OpenSSL 3)") if key == "rss_bytes" else None,
            "ratio": round(best / ours_v, 3) if ours_v > 0 else None,
            "ratio_note": (f"better peer / ours, {what} delta / connections; the goal is met at "
                           ">= 1.333"),
            "n": {p: res[p]["n"] for p in ("ours",) + peers}}
        t = res["tunnels"][key]
        figures[f"idle_agent_tunnel_bytes{suffix}"] = {
            "unit": "bytes per idle agent tunnel", "ours": t, "peers": {},
            "goal": ("<= 16 KiB per tunnel (Tailscale's DERP: 63-100 KiB, quoted, not "
                     "measured)") if key == "rss_bytes" else None,
            "ratio": round(16384 / t, 3) if t > 0 else None,
            "ratio_note": f"16384 / ours ({what} delta / tunnels); above 1.0 meets the goal",
            "n": res["tunnels"]["n"], "create_secs": info["create_secs"],
            "tickets_secs": info["tickets_secs"]}
    doc = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "machine": machine(),
           "versions": versions(coder), "figures": figures, "raw": res}
    print(f"{'figure':40} {'ours':>8} {'nginx':>8} {'haproxy':>8} {'ratio':>7}  n")
    for k, f in figures.items():
        print(f"{k:40} {fmt(f['ours']):>8} {fmt(f['peers'].get('nginx')):>8} "
              f"{fmt(f['peers'].get('haproxy')):>8} {fmt(f['ratio']):>7}  {f['n']}")
    print(f"tunnels: {ntunnels} workspaces created in {info['create_secs']} s, tickets in "
          f"{info['tickets_secs']} s")
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
