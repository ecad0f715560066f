#!/usr/bin/python3
"""Data-plane benchmarks against peers (issue 4), all on loopback in one run.

The topology is client -> region -> workspace side -> app. The app is nginx serving static
files, so it is never the bottleneck. Each setup has TLS from the client and TLS between its
two hops:

  ours     client -TLS-> coder wsproxy server => agent tunnel (TLS, HTTP/2) => coder agent -> app
  nginx    client -TLS-> nginx -TLS (keep-alive upstream)-> nginx -> app
  haproxy  client -TLS-> haproxy -TLS (http-reuse)-> haproxy -> app
  direct   client -> app (the physical reference)

Figure 1: small-request rate and latency at fixed concurrencies (1, 64, 256), with wrk
(HTTP/1.1 keep-alive) and with h2load (HTTP/2 over ALPN h2: 1x1, 8x8 and 16x16 connections x
streams; latency percentiles from its per-request log), where nghttpx (the nghttp2 project's
proxy, HTTP/2 between its hops) joins the peers. Setups alternate within each round; each
figure is the median of several runs.
Results go to a JSON file with, per figure, our value, each peer's, the goal and one ratio
oriented so that above 1.0 is better than the better of nginx and HAProxy.

Usage: bench/dataplane.py [--bin build/coder] [--json out.json] [--smoke]
--smoke: one short run of ours and direct only, to prove the harness works (make test)."""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from peers import (machine, make_cert, Procs, Setup, start_app, start_haproxy_pair,
                   start_nghttpx_pair, start_nginx_pair, start_ours, versions, write_json)


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


# ---- h2load ----

# Concurrency -> (connections, streams per connection): HTTP/2 clients multiplex.
H2_SHAPES = {1: (1, 1), 64: (8, 8), 256: (16, 16)}


def percentile(sorted_vals, pct):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(pct / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def h2load(url, conc, secs, headers, tmp):
    """h2load over HTTP/2 (ALPN h2) for secs seconds: (requests/s, p50 ms, p99 ms), the
    latencies from its per-request log."""
    conns, streams = H2_SHAPES.get(conc, (conc, 1))
    log = os.path.join(tmp, "h2load.log")
    cmd = ["h2load", "-t", "1" if conns == 1 else "2", "-c", str(conns), "-m", str(streams),
           "-D", str(secs), "--warm-up-time=1", f"--log-file={log}"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True,
                         timeout=secs + 60).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    if not m or int(m.group(3)) or int(m.group(4)) or "h2" not in out:
        raise RuntimeError(f"h2load saw failures (or no HTTP/2) against {url}:\n{out}")
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not status or int(status.group(1)) == 0 or sum(int(status.group(i)) for i in (2, 3, 4)):
        raise RuntimeError(f"h2load saw non-2xx answers against {url}:\n{out}")
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    lat = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.append(int(parts[2]) / 1000.0)
    lat.sort()
    return rps, percentile(lat, 50), percentile(lat, 99)


def figures_for(results, conc, prefix, label, peer_names):
    """Rate and latency figures for one client (wrk or h2load) at each concurrency."""
    figures = {}
    for c in conc:
        peers = {n: results[n][c] for n in results if n != "ours"}
        best = [peers[n] for n in peer_names if n in peers]
        ours = results["ours"][c]
        best_rps = max((p["rps"] for p in best), default=None)
        best_p99 = min((p["p99_ms"] for p in best), default=None)
        better = " and ".join(peer_names)
        figures[f"{prefix}_c{c}_rps"] = {
            "unit": "requests/s", "client": label, "ours": ours["rps"],
            "peers": {n: p["rps"] for n, p in peers.items()},
            "goal": f">= 1.0x the better of {better}",
            "ratio": round(ours["rps"] / best_rps, 3) if best_rps else None}
        figures[f"{prefix}_c{c}_p99_ms"] = {
            "unit": "ms", "client": label, "ours": ours["p99_ms"],
            "peers": {n: p["p99_ms"] for n, p in peers.items()},
            "goal": f"<= the better of {better}",
            "ratio": round(best_p99 / ours["p99_ms"], 3) if best_p99 else None}
        figures[f"{prefix}_c{c}_p50_ms"] = {
            "unit": "ms", "client": label, "ours": ours["p50_ms"],
            "peers": {n: p["p50_ms"] for n, p in peers.items()},
            "goal": None, "ratio": None}
    return figures


def measure(setups, conc, runs, fn):
    """Runs fn(setup, c) for every setup, alternating within each round; medians per setup."""
    results = {}
    for c in conc:
        samples = {name: [] for name in setups}
        for _ in range(runs):
            for name, setup in setups.items():
                samples[name].append(fn(setup, c))
        for name, s in samples.items():
            results.setdefault(name, {})[c] = {
                "rps": statistics.median(x[0] for x in s),
                "p50_ms": statistics.median(x[1] for x in s),
                "p99_ms": statistics.median(x[2] for x in s)}
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/coder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=int, default=2)
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
    try:
        cert, key = make_cert(tmp)
        app = start_app(procs, tmp)
        setups = {"direct": Setup(f"http://127.0.0.1:{app}/"),
                  "ours": start_ours(procs, tmp, coder, app, cert, key)}
        if not args.smoke:
            setups["nginx"] = start_nginx_pair(procs, tmp, app, cert, key)
            setups["haproxy"] = start_haproxy_pair(procs, tmp, app, os.path.join(tmp, "both.pem"))
        h1 = measure(setups, conc, runs,
                     lambda setup, c: wrk(setup.url(), c, secs, setup.headers()))
        h2 = {}
        if shutil.which("h2load"):
            h2_setups = {n: v for n, v in setups.items() if n != "direct"}
            if not args.smoke:
                h2_setups["nghttpx"] = start_nghttpx_pair(procs, tmp, app, cert, key)
            h2 = measure(h2_setups, conc, runs,
                         lambda setup, c: h2load(setup.url(), c, secs, setup.headers(), tmp))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    figures = figures_for(h1, conc, "small_requests", "wrk, HTTP/1.1 keep-alive",
                          ("nginx", "haproxy"))
    if h2:
        figures.update(figures_for(h2, conc, "small_requests_h2", "h2load, HTTP/2",
                                   ("nginx", "haproxy", "nghttpx")))
    doc = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "machine": machine(),
           "versions": versions(coder), "figures": figures}
    print(f"{'figure':30} {'ours':>10} {'ratio':>7}  peers")
    for k, f in figures.items():
        peers = "  ".join(f"{n}={v:.2f}" for n, v in f["peers"].items())
        print(f"{k:30} {f['ours']:>10.2f} {f['ratio'] if f['ratio'] is not None else '-':>7}  "
              f"{peers}")
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
