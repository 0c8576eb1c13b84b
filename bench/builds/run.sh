#!/bin/bash
# Build benchmark: the same Node function (5 npm dependencies, lockfile) and
# Python function (5 pip dependencies, pinned) built through the durable
# build queue with an empty dependency cache (a new cacheKey), then with a
# warm one (the same cacheKey again, the function's code edited, the same
# lockfile), then with one dependency added (bench/builds/changed: must
# install again); several rounds, medians; plus the queue's own overhead
# (job `started` - `created`) from every job.
#
#   cargo build --release -p opr-cli -p opr-runtime && bench/builds/run.sh
#
# Environment: REPS (5 rounds of cold + warm per language), LANGS
# (node,python), NOKEY (1: also build without cacheKey each round),
# NODE_INSTALL / PYTHON_INSTALL (an install step instead of the executor's
# default one, to compare variants), TMPFS_MB (OPR_EXECUTOR_BUILD_TMPFS_MB
# of the executor: 0 keeps build folders on disk), OPR (target/release/opr).
#
# Needs network access to the npm and PyPI registries (real installs).
# Details of what is measured: bench/builds/driver.py. Results (markdown)
# go to stdout and, with raw samples, to bench/results/builds-<stamp>/.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
opr=${OPR:-$root/target/release/opr}
py=/usr/bin/python3

[[ -x $opr ]] || { echo "missing $opr: cargo build --release -p opr-cli" >&2; exit 2; }
[[ -x $(dirname "$opr")/opr-runtime ]] || { echo "missing opr-runtime next to $opr" >&2; exit 2; }
for tool in node npm bwrap mksquashfs "$py"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$root/bench/results/builds-$stamp
mkdir -p "$out"
tmp=$(mktemp -d /tmp/opr-builds-bench.XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- crates || echo ' (+ uncommitted changes in crates/)')"
    echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "node: $(env -i /usr/bin/node --version); npm: $(env -u NODE_EXTRA_CA_CERTS npm --version); python: $($py --version 2>&1); pip: $($py -m pip --version | cut -d' ' -f2)"
    echo "command: ${0} (REPS=${REPS:-5} LANGS=${LANGS:-node,python} NOKEY=${NOKEY:-1} NODE_INSTALL=${NODE_INSTALL:-default} PYTHON_INSTALL=${PYTHON_INSTALL:-default} TMPFS_MB=${TMPFS_MB:-default})"
} | tee "$out/machine.txt" >&2

env -u NODE_EXTRA_CA_CERTS "$py" "$here/driver.py" --opr "$opr" --out "$out" --tmp "$tmp" \
    --functions "$here/functions" --changed "$here/changed" --reps "${REPS:-5}" --langs "${LANGS:-node,python}" \
    --nokey "${NOKEY:-1}" --node-install "${NODE_INSTALL:-}" --python-install "${PYTHON_INSTALL:-}" --tmpfs-mb "${TMPFS_MB:-}"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt" >&2
echo "results in $out" >&2
