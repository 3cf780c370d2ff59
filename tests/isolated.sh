#!/usr/bin/env bash
# Runs a command (the test suite) in a private network namespace where only loopback exists,
# and a private mount namespace, so nothing it starts -- the cluster, dockerd, docker-registry,
# skopeo -- can reach another machine, and no mount dockerd makes outlives the run.
#
#   tests/isolated.sh .venv/bin/pytest -q
#
# Needs root (CAP_SYS_ADMIN). Without it the command runs on the host network with a warning:
# every server still binds to 127.0.0.0/8 and dockerd's proxies point at 127.0.0.1:9.
set -euo pipefail

if [ "${KRAKEN_ISOLATED:-}" = 1 ]; then
  exec "$@"
fi
if err=$(unshare --net --mount -- ip link set lo up 2>&1); then
  exec unshare --net --mount -- env KRAKEN_ISOLATED=1 \
    bash -c 'ip link set lo up && exec "$@"' isolated "$@"
fi
echo "tests/isolated.sh: cannot create a private network namespace (unshare --net: ${err:-not permitted});" \
     "running on the host network. Servers still bind to 127.0.0.0/8 only." >&2
exec env KRAKEN_ISOLATED=0 "$@"
