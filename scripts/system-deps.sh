#!/usr/bin/env bash
# Installs the Debian packages shoal's tests and benchmarks drive for real:
#   chromium   headless browser for the dashboard tests
#   prometheus a real Prometheus server scraping the control plane
#   redis-server / nghttp2-client (h2load)  the global rate-limit tests
#   etcd-server the etcd config store and the multi-instance control-plane tests
#   iproute2 / iptables  network-namespace "pods" and transparent capture (multi-cluster)
# plus, for `make bench`: nginx-light (backend), nghttp2-client (h2load), wrk.
# Does nothing for packages already present; needs root (or sudo) to install.
set -euo pipefail
want=("$@")
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "shoal: please install: ${missing[*]} (apt-get install ${missing[*]})" >&2; exit 1
  fi
fi
echo "shoal: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
