#!/bin/bash
# Docker cold starts (issue: Docker and Swarm backends), in one run:
# `docker run` of the runtime image until its first HTTP 200 (baseline),
# then `opr executor --backend docker` cold starts with a pool miss and a
# pool hit.
#
#   ./scripts/setup-tests.sh && cargo build --release -p opr-cli && bench/docker/run.sh
#
# Environment: SAMPLES (15), OPR (target/release/opr).
set -euo pipefail
cd "$(dirname "$0")/../.."
docker info >/dev/null 2>&1 || { echo "no Docker engine: run scripts/setup-tests.sh" >&2; exit 2; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
exec /usr/bin/python3 bench/docker/driver.py
