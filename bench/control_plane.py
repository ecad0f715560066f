#!/usr/bin/python3
"""Control-plane benchmarks (issue 2): proxy start -> registered, and the RSS of an idle primary
and an idle proxy. Real processes on loopback; everything started is stopped by PID.

Usage: bench/control_plane.py [--runs N] [--bin build/coder] [--json out.json]
Prints a table and, with --json, writes the figures."""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.02)
    raise RuntimeError("not ready: " + url)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def private_dirty_kib(pid):
    """Memory only this process can account for (heap, stacks, written data): RSS minus the
    file-backed library pages the kernel can share or drop."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "coder"))
    ap.add_argument("--json")
    a = ap.parse_args()
    coder = os.path.abspath(a.bin)
    tmp = tempfile.mkdtemp(prefix="coder-bench-")
    procs = []
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        penv = dict(env, CODER_CONFIG_DIR=os.path.join(tmp, "primary"))
        primary = subprocess.Popen([coder, "server", "--http-address", f"127.0.0.1:{port}",
                                    "--access-url", url], env=penv,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(primary)
        wait_http(url + "/healthz")
        cenv = dict(env, CODER_CONFIG_DIR=os.path.join(tmp, "client"))
        subprocess.run([coder, "login", url, "--first-user-username", "admin",
                        "--first-user-email", "admin@example.com",
                        "--first-user-password", "SomeSecurePassword!1",
                        "--first-user-trial=false"], env=cenv, check=True,
                       stdout=subprocess.DEVNULL)
        token = subprocess.run([coder, "wsproxy", "create", "--name", "bench", "--no-prompt",
                            "--only-token"],
                               env=cenv, check=True, capture_output=True, text=True).stdout.strip()
        times = []
        proxy_rss = proxy_dirty = 0
        for i in range(a.runs):
            hp = free_port()
            xenv = dict(env, CODER_PRIMARY_ACCESS_URL=url, CODER_PROXY_SESSION_TOKEN=token,
                        CODER_HTTP_ADDRESS=f"127.0.0.1:{hp}", CODER_ACCESS_URL=f"http://127.0.0.1:{hp}")
            t0 = time.monotonic()
            p = subprocess.Popen([coder, "wsproxy", "server"], env=xenv,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            for line in p.stderr:
                if "registered with the primary" in line:
                    times.append((time.monotonic() - t0) * 1000)
                    break
            if i == a.runs - 1:
                time.sleep(3)  # idle
                proxy_rss = rss_kib(p.pid)
                proxy_dirty = private_dirty_kib(p.pid)
            p.send_signal(signal.SIGTERM)
            p.wait(10)
            procs.remove(p)
        time.sleep(1)
        primary_rss = rss_kib(primary.pid)
        primary_dirty = private_dirty_kib(primary.pid)
        res = {
            "proxy_start_to_registered_ms": {"median": statistics.median(times),
                                             "min": min(times), "max": max(times),
                                             "runs": len(times), "goal": 100},
            "idle_rss_kib": {"primary": primary_rss, "proxy": proxy_rss, "goal": 10240},
            "idle_private_dirty_kib": {"primary": primary_dirty, "proxy": proxy_dirty},
        }
        print(f"proxy start -> registered: median {res['proxy_start_to_registered_ms']['median']:.1f} ms"
              f" (min {min(times):.1f}, max {max(times):.1f}, {len(times)} runs; goal <= 100 ms)")
        print(f"idle RSS: primary {primary_rss/1024:.1f} MiB, proxy {proxy_rss/1024:.1f} MiB"
              " (goal <= 10 MiB each)")
        print(f"idle private dirty: primary {primary_dirty/1024:.1f} MiB,"
              f" proxy {proxy_dirty/1024:.1f} MiB")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
