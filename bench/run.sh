#!/bin/sh
# `make bench`: every benchmark of issue 4 in one run (not tests), then the report.
#   bench/results/control_plane.json   proxy start -> registered, idle RSS (issue 2)
#   bench/results/parts/*.json         one file per figure group, as each script wrote it
#   bench/results/latest.json          all figures merged (bench/report.py), with timings
#   bench/results/latest.md            the table of ratios; docs/bench.png the plot
# Every script starts its own processes on loopback and stops them by PID.
set -eu
cd "$(dirname "$0")/.."
mkdir -p bench/results/parts
secs=""
part() { # name script args...
    name=$1
    shift
    t0=$(date +%s.%N)
    /usr/bin/python3 "$@" --json "bench/results/parts/$name.json"
    secs="$secs --seconds $name=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")"
}
t_all=$(date +%s)
/usr/bin/python3 bench/control_plane.py --runs 20 --json bench/results/control_plane.json
part dataplane bench/dataplane.py
part bulk bench/bulk.py
part idle bench/idle.py
part geo bench/geo.py
part failure bench/failure.py
part cpu bench/cpu.py
# shellcheck disable=SC2086
/usr/bin/python3 bench/report.py bench/results/parts/dataplane.json bench/results/parts/bulk.json \
    bench/results/parts/idle.json bench/results/parts/geo.json bench/results/parts/failure.json \
    bench/results/parts/cpu.json $secs --out bench/results/latest.json \
    --markdown bench/results/latest.md --plot docs/bench.png
echo "make bench: $(($(date +%s) - t_all)) s in all"
