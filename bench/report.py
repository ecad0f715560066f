#!/usr/bin/python3
"""Merges the figures of one `make bench` run into bench/results/latest.json, prints the table of
ratios, writes it as Markdown, and renders the plot (gnuplot, PNG).

Every part (bench/dataplane.py, bulk.py, idle.py, geo.py, failure.py, cpu.py) writes a JSON file
with "figures": {key: {"unit", "ours", "peers": {name: value}, "goal", "ratio", ...}}, where
ratio above 1.0 means better than the better peer (or than the goal where no peer applies).
latest.json keeps every figure as its part wrote it, plus the run's date, machine, versions and
the seconds each part took.

Usage: bench/report.py PART.json... --out latest.json [--markdown table.md] [--plot plot.png]
                       [--seconds name=S ...]"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile


def best_peer(fig):
    """(name, value) of the peer the ratio is against: the one the figure names (ratio_against),
    else the better one by the figure's sense."""
    peers = {n: v for n, v in (fig.get("peers") or {}).items()
             if isinstance(v, (int, float)) and n not in ("direct", "physical_min",
                                                          "iperf3_raw_tcp", "primary_path",
                                                          "physical_max")}
    if not peers:
        return None, None
    if fig.get("ratio_against") in peers:  # the goal names the peer (bulk: two nginx)
        return fig["ratio_against"], peers[fig["ratio_against"]]
    unit = (fig.get("unit") or "").lower()
    lower_better = any(w in unit for w in ("ms", "bytes", "instructions", " s", "seconds"))
    name = (min if lower_better else max)(peers, key=peers.get)
    return name, peers[name]


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def rows(figures):
    out = []
    for key, fig in figures.items():
        if not isinstance(fig, dict) or "ours" not in fig:
            continue
        name, val = best_peer(fig)
        out.append((key, fig.get("unit", ""), fig["ours"], name, val, fig.get("ratio"),
                    fig.get("goal")))
    return out


def markdown(doc, table):
    lines = [f"Run of {doc['date']} on {doc['machine'].get('cpu')}, "
             f"{doc['machine'].get('cores')} cores, kernel {doc['machine'].get('kernel')}.", "",
             "| figure | unit | ours | compared with | ratio | goal |",
             "|---|---|---|---|---|---|"]
    for key, unit, ours, name, val, ratio, goal in table:
        peer = f"{fmt(val)} ({name})" if name else "-"
        mark = "" if ratio is None else (" ✔" if ratio >= 1.0 else " ✘")
        lines.append(f"| `{key}` | {unit} | {fmt(ours)} | {peer} | {fmt(ratio)}{mark} | "
                     f"{goal or '-'} |")
    return "\n".join(lines) + "\n"


def plot(table, path):
    """Horizontal bars of log2(ratio) per figure: right of 0 is better than the better peer."""
    if not shutil.which("gnuplot"):
        print("report: gnuplot not found; no plot (make bench installs gnuplot-nox)")
        return False
    data = [(k, r) for k, _, _, _, _, r, _ in table if isinstance(r, (int, float)) and r > 0]
    if not data:
        return False
    with tempfile.TemporaryDirectory() as d:
        dat = os.path.join(d, "ratios.dat")
        with open(dat, "w") as f:
            for i, (k, r) in enumerate(reversed(data)):
                # Bars are clipped to 1/8..16 so one huge ratio leaves the rest readable.
                f.write(f"{i} {max(-3.0, min(4.0, math.log2(r))):.4f} \"{k}\" {r:.3f}\n")
        height = max(400, 22 * len(data) + 120)
        script = f"""set terminal png size 1100,{height} font ",9"
set output "{path}"
set termoption noenhanced
set title "ours vs the compared peer (ratio; right of 1 is better), one make bench run"
set style fill solid 0.8 border -1
set boxwidth 0.7
set yrange [-1:{len(data)}]
set ytics nomirror
set grid xtics
set xlabel "ratio (log scale)"
set xtics ("1/8" -3, "1/4" -2, "1/2" -1, "1" 0, "2" 1, "4" 2, "8" 3, "16" 4)
set xrange [-3:5]
unset key
plot "{dat}" using ($2/2):1:($2/2):(0.35):($2 >= 0 ? 0x3a9a4a : 0xc0504d):ytic(3) \\
     with boxxyerror lc rgb variable, \\
     "" using ($2 >= 0 ? $2 : 0):1:(sprintf("%.2f", $4)) with labels left offset 0.5,0
"""
        r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"report: gnuplot failed: {r.stderr.strip()[:500]}")
            return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--markdown")
    ap.add_argument("--plot")
    ap.add_argument("--seconds", action="append", default=[],
                    help="NAME=S: how long that part took (kept in the results)")
    args = ap.parse_args()
    doc = {"date": None, "machine": None, "versions": {}, "seconds": {}, "figures": {},
           "parts": {}}
    for path in args.parts:
        with open(path) as f:
            part = json.load(f)
        name = os.path.splitext(os.path.basename(path))[0]
        doc["date"] = doc["date"] or part.get("date")
        doc["machine"] = doc["machine"] or part.get("machine")
        doc["versions"].update(part.get("versions") or {})
        dup = set(doc["figures"]) & set(part.get("figures") or {})
        if dup:
            sys.exit(f"report: figures {sorted(dup)} come from two parts")
        doc["figures"].update(part.get("figures") or {})
        doc["parts"][name] = {k: v for k, v in part.items()
                              if k not in ("figures", "machine", "versions", "date")}
    for s in args.seconds:
        n, _, v = s.partition("=")
        doc["seconds"][n] = float(v)
    table = rows(doc["figures"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"{'figure':44} {'ours':>10} {'compared with':>22} {'ratio':>7}")
    for key, _, ours, name, val, ratio, _ in table:
        peer = f"{fmt(val)} ({name})" if name else "-"
        print(f"{key:44} {fmt(ours):>10} {peer:>22} {fmt(ratio):>7}")
    met = [r for *_, r, _ in table if isinstance(r, (int, float))]
    print(f"{sum(1 for r in met if r >= 1.0)} of {len(met)} ratios at or above 1.0")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(doc, table))
    if args.plot and plot(table, os.path.abspath(args.plot)):
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
