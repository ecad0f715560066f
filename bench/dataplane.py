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
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from peers import (Procs, Setup, make_cert, machine, start_app, start_haproxy_pair,
                   start_nginx_pair, start_ours, versions)


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
        setups = {"direct": Setup(f"http://127.0.0.1:{app}/"),
                  "ours": start_ours(procs, tmp, coder, app, cert, key)}
        if not args.smoke:
            setups["nginx"] = start_nginx_pair(procs, tmp, app, cert, key)
            setups["haproxy"] = start_haproxy_pair(procs, tmp, app, os.path.join(tmp, "both.pem"))
        for c in conc:
            samples = {name: [] for name in setups}
            for _ in range(runs):  # setups alternate within each round
                for name, setup in setups.items():
                    samples[name].append(wrk(setup.url(), c, secs, setup.headers()))
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
