#!/bin/sh
# Installs, with apt-get, every Debian package the build, the tests and `make run` need,
# skipping the ones already present; `deps.sh bench` adds the benchmark peers and load tools.
# Safe to run repeatedly; needs root only when something is missing. Packages are never
# allowed to start their services (a policy-rc.d for the duration): the benchmark starts its
# own nginx and HAProxy on free loopback ports and stops them by PID.
set -eu

PKGS="cmake ninja-build pkg-config gcc clang clang-format libclang-rt-14-dev
libuv1-dev libssl-dev openssl libnghttp2-dev libjansson-dev libyaml-dev libsqlite3-dev
node-llhttp zlib1g-dev libcmocka-dev
python3 python3-pytest python3-requests curl prometheus ca-certificates procps
nginx-light wrk"
if [ "${1:-}" = bench ]; then
    PKGS="$PKGS haproxy nghttp2-client nghttp2-proxy iperf3 openssh-server openssh-client pagekite
gnuplot-nox"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages and not root; install them with: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
fi
trap 'if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get -o DPkg::Lock::Timeout=300 update -qq
# shellcheck disable=SC2086
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null
