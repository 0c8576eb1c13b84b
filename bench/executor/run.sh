#!/bin/bash
# Executor benchmark: cold starts (warm-pool hit and full sandbox start, Node
# and Python) beside a bare interpreter start, warm execution through the
# executor API beside the same runtime called directly, and a burst of 50
# concurrent cold starts with and without a pool. One run, every figure next
# to its baseline from the same run.
#
#   cargo build --release -p opr-cli -p opr-runtime && bench/executor/run.sh
#
# Needs root (cgroup limits), bubblewrap, hyperfine, wrk, ss, node and
# /usr/bin/python3. Environment: SAMPLES (25 cold starts per case), LANGS (node,python),
# WARM_BLOCKS x WARM_BLOCK_SIZE (10 x 250 warm requests per path),
# WRK_RUNS x WRK_SECS (4 x 5 s of wrk per path), BURST (50),
# BURST_ROUNDS (2), BURST_LANGS (node,python), PHASES (cold,warm,burst),
# WHAT_IF (sync; comma list, also nopip), OPR (target/release/opr).
#
# What it does (details in bench/executor/driver.py):
# - hyperfine -N --warmup 3 --runs 30 'node -e 0' and '/usr/bin/python3 -c
#   pass' in a clean environment, before and after the executor phases (the
#   baseline pools both: 60 runs);
# - cold: two executors side by side, one with a warm pool of 2 per language
#   and one without; rounds of one sample per case, order rotated; before a
#   pool sample the driver polls (20 ms) until every pooled runtime's port is
#   listening again (the port of a standby runtime opens only once its worker
#   is up), then sleeps 0.3 s; every runtime is deleted after its sample;
# - warm: one runtime per language, called on one keep-alive connection
#   through POST /v1/runtimes/<id>/executions and directly at its port (found
#   in the backend's record and checked with ss -ltnp) with the headers the
#   executor sends; alternating blocks with http.client, then wrk -t1 -c1
#   with a Lua script, alternating runs;
# - burst: 50 threads, one connection each, released by a barrier, 50
#   runtime ids; against the executor without pool and one with a pool of 50
#   per language (filled before each burst, then sync + 3 s), alternating;
#   Node every round, Python one round (a burst writes ~1 GB of small files).
# - a Python package whose `main` is sync (the Open Runtimes starter's form;
#   the main rows use an async one), in the cold phase;
# - what-if rows (labelled so, WHAT_IF=nopip; obsolete since the build
#   makes pip-less virtualenvs): a Python package built with
#   `python3 -m venv --without-pip` (the executor that builds it runs with
#   that one-line change to hooks/build-prepare.sh in its own runtime-file
#   cache; every measured executor is unmodified), and warm calls with
#   logging off.
# Results (markdown) go to stdout and, with raw samples, to
# bench/results/executor-<stamp>/.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
opr=${OPR:-$root/target/release/opr}
py=/usr/bin/python3

[[ -x $opr ]] || { echo "missing $opr: cargo build --release -p opr-cli" >&2; exit 2; }
for tool in hyperfine wrk ss node bwrap "$py"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$root/bench/results/executor-$stamp
mkdir -p "$out"
tmp=$(mktemp -d /tmp/opr-exec-bench.XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT
# opr is self-contained (it embeds the runtime files and serves as
# opr-runtime inside the sandboxes): a private copy keeps a concurrent
# cargo build from swapping it mid-run.
mkdir -p "$tmp/bin"
cp "$opr" "$tmp/bin/opr"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "opr: $opr ($(stat -c '%y' "$opr" | cut -d. -f1), sha256 $(sha256sum "$opr" | cut -c1-12))"
    echo "commit: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- crates || echo ' (+ uncommitted changes in crates/)')"
    echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "node: $(env -i /usr/bin/node --version); python: $($py --version 2>&1); $(hyperfine --version); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "command: ${0} (SAMPLES=${SAMPLES:-25} LANGS=${LANGS:-node,python} BURST=${BURST:-50} BURST_ROUNDS=${BURST_ROUNDS:-2} BURST_LANGS=${BURST_LANGS:-node,python})"
} | tee "$out/machine.txt" >&2

env -u NODE_EXTRA_CA_CERTS "$py" "$here/driver.py" --opr "$tmp/bin/opr" --out "$out" --tmp "$tmp" \
    --samples "${SAMPLES:-25}" --langs "${LANGS:-node,python}" \
    --warm-blocks "${WARM_BLOCKS:-10}" --warm-block-size "${WARM_BLOCK_SIZE:-250}" \
    --wrk-runs "${WRK_RUNS:-4}" --wrk-secs "${WRK_SECS:-5}" \
    --burst "${BURST:-50}" --burst-rounds "${BURST_ROUNDS:-2}" --burst-langs "${BURST_LANGS:-node,python}" \
    --phases "${PHASES:-cold,warm,burst}" --what-if "${WHAT_IF:-sync}"
echo "results in $out" >&2
