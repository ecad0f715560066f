#!/usr/bin/python3
"""CPU cost (issue 4, figure 6): instructions per request and per byte relayed, ours vs the nginx
pair, counted by valgrind's callgrind (perf stat cannot count instructions on these machines).

The region and the workspace-side process of each setup run under callgrind; the TLS client
(h2load, curl) and the app (nginx) run natively:
  ours   coder wsproxy server (region) + coder agent (workspace side)
  nginx  front nginx (region) + back nginx (workspace side), each `master_process off;` so one
         process does each hop's work
Before each load window the counters are zeroed (`callgrind_control --zero PID`), after it they
are dumped (`--dump PID`) and the dump's summary line read. Idle work (re-registration, keepalive
pings) is measured in an idle window and subtracted, scaled to the load window's length.
  cpu_instructions_per_request  h2load --h1: N small GETs (/hello, 13 bytes) over 8 keep-alive
                                connections (their 8 TLS handshakes included), both hops summed
  cpu_instructions_per_byte     one 64 MiB download (/big) with curl, both hops summed
Each figure carries the split per hop. Ratio = nginx / ours (above 1.0: we execute fewer).
Callgrind counts instructions deterministically; note that it counts each iteration of a `rep
movsb`/`rep stosb` (glibc's memcpy/memset for large blocks) as one instruction, so a copied byte
costs about one instruction here where the CPU moves tens of bytes per cycle. Where ours costs
more than 1.2x nginx, the top functions of our dumps (self and inclusive, and the callers of the
top self functions) are printed and written under the figure's "profile".

Usage: bench/cpu.py [--bin build/coder] [--json out.json] [--smoke] [--requests N] [--big-mib M]
                    [--keep DIR]"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from peers import (machine, make_cert, nginx_conf, Procs, Setup, start_app, start_ours, versions,
                   wait_port, write_json)
from control_plane import free_port

PROFILE_OVER = 1.2  # profile ours when it executes this many times nginx's instructions


def valgrind(tmp, name):
    return ["valgrind", "--tool=callgrind", "--dump-instr=no",
            f"--callgrind-out-file={tmp}/cg.{name}.%p"]


def start_nginx_pair_single(procs, tmp, app_port, cert, key, wrap):
    """peers.start_nginx_pair with `master_process off;` (one process per hop, so callgrind sees
    all its work) and a command prefix per instance (wrap["nginx-front"/"nginx-back"])."""
    front, back = free_port(), free_port()
    tls = f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;"
    conf = nginx_conf(tmp, "nginx-back", f"""upstream app {{ server 127.0.0.1:{app_port};
        keepalive 256; }}
    server {{
        listen 127.0.0.1:{back} ssl; {tls}
        location / {{ proxy_pass http://app; proxy_http_version 1.1;
                      proxy_set_header Connection ""; }}
    }}""", main="master_process off;")
    procs.start("nginx-back", [*wrap["nginx-back"], "nginx", "-c", conf, "-e", "stderr"])
    conf = nginx_conf(tmp, "nginx-front", f"""upstream back {{ server 127.0.0.1:{back};
        keepalive 256; }}
    server {{
        listen 127.0.0.1:{front} ssl; {tls}
        location / {{ proxy_pass https://back; proxy_http_version 1.1;
                      proxy_set_header Connection ""; proxy_ssl_session_reuse on; }}
    }}""", main="master_process off;")
    procs.start("nginx-front", [*wrap["nginx-front"], "nginx", "-c", conf, "-e", "stderr"])
    wait_port(back, 60)
    wait_port(front, 60)
    return Setup(f"https://127.0.0.1:{front}/")


# ---- callgrind control ----

def control(pids, action):
    """callgrind_control --zero or --dump, for these PIDs only (in parallel)."""
    ps = [subprocess.Popen(["callgrind_control", action, str(pid)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for pid in pids]
    for pid, p in zip(pids, ps):
        out = p.communicate(timeout=60)[0]
        if p.returncode != 0 or "OK" not in out:
            raise RuntimeError(f"callgrind_control {action} {pid} failed:\n{out}")


def last_dump(tmp, name, pid):
    """The newest dump of this process and its instruction total (the summary line)."""
    def part(path):
        return int(path.rsplit(".", 1)[1])
    end = time.monotonic() + 30
    while True:
        files = sorted(glob.glob(f"{tmp}/cg.{name}.{pid}.*"), key=part)
        if files:
            with open(files[-1]) as f:
                text = f.read()
            m = re.search(r"^summary: (\d+)", text, re.M)
            if m and re.search(r"^totals: ", text, re.M):  # totals comes last: complete
                return files[-1], int(m.group(1))
        if time.monotonic() > end:
            raise RuntimeError(f"no callgrind dump for {name} ({pid})")
        time.sleep(0.05)


class Counted:
    """The processes of one setup that run under callgrind: (hop, name, pid)."""

    def __init__(self, tmp, hops):
        self.tmp = tmp
        self.hops = hops

    def window(self, fn):
        """Runs fn between a zero and a dump; returns (fn's result, seconds, {hop: instr},
        {hop: dump path})."""
        pids = [pid for _, _, pid in self.hops]
        seen = {name: len(glob.glob(f"{self.tmp}/cg.{name}.{pid}.*")) for _, name, pid in self.hops}
        control(pids, "--zero")
        t0 = time.monotonic()
        res = fn()
        secs = time.monotonic() - t0
        control(pids, "--dump")
        counts, dumps = {}, {}
        for hop, name, pid in self.hops:
            end = time.monotonic() + 30
            while len(glob.glob(f"{self.tmp}/cg.{name}.{pid}.*")) <= seen[name]:
                if time.monotonic() > end:
                    raise RuntimeError(f"no new callgrind dump for {name}")
                time.sleep(0.05)
            dumps[hop], counts[hop] = last_dump(self.tmp, name, pid)
        return res, secs, counts, dumps


# ---- loads (outside valgrind) ----

def small_requests(setup, n, conns=8):
    cmd = ["h2load", "--h1", "-n", str(n), "-c", str(conns), "-m", "1"]
    for h in setup.headers():
        cmd += ["-H", h]
    out = subprocess.run(cmd + [setup.url()], capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"status codes: (\d+) 2xx", out)
    if not m or int(m.group(1)) != n:
        raise RuntimeError(f"h2load: not all {n} requests answered 2xx:\n{out}")
    return n


def download(setup, size):
    cmd = ["curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    for h in setup.headers():
        cmd += ["-H", h]
    out = subprocess.run(cmd + [setup.url("big")], capture_output=True, text=True, timeout=300,
                         check=True).stdout.split()
    if out != ["200", str(size)]:
        raise RuntimeError(f"download of /big: {out}")
    return size


# ---- profiles ----

_LINE = re.compile(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*?)(?: \[(.*)\])?$")


def annotate(dump, inclusive, top):
    """Top functions of a dump: [(instructions, percent, function, object)]. The ones holding
    (nearly) everything, main and its callers, are left out; a function callgrind names twice
    (absolute and relative source path) is listed once."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no",
                          f"--inclusive={'yes' if inclusive else 'no'}", dump],
                         capture_output=True, text=True, timeout=120).stdout
    rows, seen = [], set()
    body = out.split("file:function", 1)[-1]
    for line in body.splitlines():
        m = _LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        pct, fn = float(m.group(2)), m.group(3)
        short = fn.rsplit("/", 1)[-1]
        if pct >= 99.0 or short in seen:
            continue
        seen.add(short)
        rows.append((int(m.group(1).replace(",", "")), pct, fn,
                     os.path.basename(m.group(4) or "")))
        if len(rows) >= top:
            break
    return rows


def callers(dump, functions, top=6):
    """For each function name: its top callers [(instructions, caller)] from the caller tree."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", "--tree=caller",
                          dump], capture_output=True, text=True, timeout=120).stdout
    res = {}
    block = []
    for line in out.splitlines():
        if not line.strip():
            block = []
            continue
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(<|\*)\s+(\S.*?)(?: \[.*\])?$", line)
        if not m:
            block = []
            continue
        if m.group(2) == "<":
            block.append((int(m.group(1).replace(",", "")), m.group(3)))
        elif m.group(3) in functions:
            res[m.group(3)] = sorted(block, reverse=True)[:top]
    return res


def profile(dumps):
    prof = {}
    for hop, dump in dumps.items():
        self_rows = annotate(dump, False, 15)
        incl_rows = annotate(dump, True, 20)
        prof[hop] = {
            "self": [list(r) for r in self_rows], "inclusive": [list(r) for r in incl_rows],
            "callers": callers(dump, {r[2] for r in self_rows[:4]})}
    return prof


def print_profile(key, prof):
    print(f"\n{key}: ours executes more than {PROFILE_OVER}x nginx; our top functions")
    for hop, p in prof.items():
        for kind in ("self", "inclusive"):
            print(f"  {hop}, {kind}:")
            for ir, pct, fn, obj in p[kind][:12]:
                print(f"    {ir:>14,} {pct:5.1f}%  {fn}  [{obj}]")
        for fn, cs in p["callers"].items():
            print(f"  {hop}, callers of {fn}:")
            for ir, c in cs:
                print(f"    {ir:>14,}  {c}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/coder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="copy the callgrind dumps to DIR (for callgrind_annotate)")
    args = ap.parse_args()
    coder = os.path.abspath(args.bin)
    for tool in ("nginx", "openssl", "curl", "h2load", "valgrind", "callgrind_control",
                 "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found; run `make bench` (it installs the peers)")
    nreq, mib = (100, 2) if args.smoke else (args.requests, args.big_mib)
    idle_s = 1.0 if args.smoke else 3.0
    tmp = tempfile.mkdtemp(prefix="coder-bench-cpu-")
    os.chmod(tmp, 0o755)  # nginx workers (www-data when started as root) read the app's files
    procs = Procs(tmp)
    # per setup: {"req": {hop: instr}, "byte": {...}, "idle": {hop: instr/s}, "dumps": {...}}
    res = {"ours": {}, "nginx": {}}
    try:
        cert, key = make_cert(tmp)
        app = start_app(procs, tmp, big_mib=mib)
        ours = start_ours(procs, tmp, coder, app, cert, key,
                          wrap={"wsproxy": valgrind(tmp, "wsproxy"),
                                "agent": valgrind(tmp, "agent")})
        nginx = start_nginx_pair_single(procs, tmp, app, cert, key,
                                        {n: valgrind(tmp, n) for n in ("nginx-front",
                                                                       "nginx-back")})
        setups = {
            "ours": (ours, Counted(tmp, [("region", "wsproxy", procs.pid("wsproxy")),
                                         ("workspace", "agent", procs.pid("agent"))])),
            "nginx": (nginx, Counted(tmp, [("region", "nginx-front", procs.pid("nginx-front")),
                                           ("workspace", "nginx-back",
                                            procs.pid("nginx-back"))]))}
        for name, (setup, counted) in setups.items():
            small_requests(setup, 16)  # warm: tunnels, upstream connections, keys, parked streams
            _, secs, counts, _ = counted.window(lambda: time.sleep(idle_s))
            res[name]["idle"] = {h: c / secs for h, c in counts.items()}
        for kind, load, amount in (("req", lambda s: small_requests(s, nreq), nreq),
                                   ("byte", lambda s: download(s, mib << 20), mib << 20)):
            for name, (setup, counted) in setups.items():  # ours and nginx alternate
                _, secs, counts, dumps = counted.window(lambda: load(setup))
                idle = res[name]["idle"]
                res[name][kind] = {h: max(0.0, c - idle[h] * secs) / amount
                                   for h, c in counts.items()}
                res[name][kind + "_secs"] = secs
                res[name][kind + "_dumps"] = dumps
        figures = {}
        for kind, key, unit, what in (
                ("req", "cpu_instructions_per_request", "instructions/request",
                 f"{nreq} GETs of 13 bytes over 8 keep-alive TLS connections (h2load --h1)"),
                ("byte", "cpu_instructions_per_byte", "instructions/byte",
                 f"one {mib} MiB download (curl)")):
            o, n = res["ours"][kind], res["nginx"][kind]
            ours_total, ngx_total = sum(o.values()), sum(n.values())
            figures[key] = {
                "unit": unit, "ours": round(ours_total, 2), "peers": {"nginx": round(ngx_total, 2)},
                "ours_split": {h: round(v, 2) for h, v in o.items()},
                "peers_split": {"nginx": {h: round(v, 2) for h, v in n.items()}},
                "load": what, "window_s": {"ours": round(res["ours"][kind + "_secs"], 2),
                                           "nginx": round(res["nginx"][kind + "_secs"], 2)},
                "goal": None,
                "ratio": round(ngx_total / ours_total, 3) if ours_total else None,
                "ratio_note": "nginx / ours, both hops summed (region + workspace side), idle "
                              "work subtracted; no goal in the issue"}
            if ours_total > PROFILE_OVER * ngx_total:
                figures[key]["profile"] = profile(res["ours"][kind + "_dumps"])
        figures["cpu_idle_instructions_per_s"] = {
            "unit": "instructions/s", "ours": round(sum(res["ours"]["idle"].values())),
            "peers": {"nginx": round(sum(res["nginx"]["idle"].values()))},
            "ours_split": {h: round(v) for h, v in res["ours"]["idle"].items()},
            "peers_split": {"nginx": {h: round(v) for h, v in res["nginx"]["idle"].items()}},
            "goal": None, "ratio": None,
            "ratio_note": "informative: what was subtracted from the load windows"}
    finally:
        procs.stop_all()
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for f in glob.glob(f"{tmp}/cg.*"):
                shutil.copy(f, args.keep)
        shutil.rmtree(tmp, ignore_errors=True)

    doc = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "machine": machine(),
           "versions": dict(versions(coder), valgrind=subprocess.run(
               ["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
               h2load=subprocess.run(["h2load", "--version"], capture_output=True,
                                     text=True).stdout.strip()),
           "figures": figures}
    print(f"{'figure':30} {'ours':>12} {'nginx':>12} {'ratio':>7}   "
          f"{'ours region/workspace':>24} {'nginx region/workspace':>24}")
    for k, f in figures.items():
        os_, ns = f["ours_split"], f["peers_split"]["nginx"]
        print(f"{k:30} {f['ours']:>12.2f} {f['peers']['nginx']:>12.2f} "
              f"{f['ratio'] if f['ratio'] is not None else '-':>7}   "
              f"{os_['region']:>11.2f}/{os_['workspace']:<12.2f} "
              f"{ns['region']:>11.2f}/{ns['workspace']:<12.2f}")
    for k, f in figures.items():
        if "profile" in f:
            print_profile(k, f["profile"])
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
