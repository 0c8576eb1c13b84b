#!/bin/bash
# Everything the test suite needs beyond scripts/setup.sh: a Docker engine
# and the runtime images (the Docker and Swarm backend tests use them).
# Idempotent; fast when all is in place.
#
#   ./scripts/setup-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

missing=()
for pkg in docker.io debootstrap; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup-tests.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# A Docker engine; the tests fail (never skip) without one.
if ! docker info >/dev/null 2>&1; then
    log=/tmp/opr-dockerd.log
    echo "setup-tests.sh: starting dockerd (log: $log)" >&2
    nohup dockerd >"$log" 2>&1 &
    pid=$!
    for ((i = 0; i < 60; i++)); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "setup-tests.sh: dockerd did not come up; last lines of $log:" >&2
        tail -n 40 "$log" >&2 || true
        exit 1
    fi
fi

# Runtime images: opr-runtime goes into them, then `opr images build` makes
# the debootstrap base (cached) and one image per language, with the Open
# Runtimes tag aliases. A rebuild with nothing changed takes about a second.
cargo build --release -q -p opr-runtime
cargo run -q -p opr-cli -- images build -q
