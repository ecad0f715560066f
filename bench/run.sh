#!/bin/sh
# `make bench`: the benchmarks (not tests). Results in bench/results/.
set -eu
cd "$(dirname "$0")/.."
mkdir -p bench/results
/usr/bin/python3 bench/control_plane.py --runs 20 --json bench/results/control_plane.json
/usr/bin/python3 bench/dataplane.py --json bench/results/latest.json
