#!/bin/bash
# Runtime server benchmark: hello-world through opr-runtime (Node worker;
# Python worker with an async and a sync `main`; Bun) side by side with plain node:http and plain asyncio baselines.
#
#   cargo build --release -p opr-runtime && bench/runtime/run.sh
#
# Environment: ROUNDS (3), DURATION (10 s per measurement), WARMUP (2 s
# before each), OPR_RUNTIME (target/release/opr-runtime), SPIN (0; 1 runs
# a SCHED_IDLE busy loop per CPU so that idle vCPUs never halt: on a VM the
# wake-up of a halted vCPU dominates the latency at concurrency 1).
#
# Each round starts every server fresh (the order rotates between rounds),
# sends 100 requests, records the RSS of its process tree, then runs wrk at
# concurrency 1 (-t1 -c1) and 32 (-t2 -c32). Servers run with a clean
# environment. The markdown table (medians over rounds) goes to stdout and,
# with the raw wrk output and server logs, to bench/results/runtime-<stamp>/.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
bin=${OPR_RUNTIME:-$root/target/release/opr-runtime}
py=/usr/bin/python3

[[ -x $bin ]] || { echo "missing $bin: cargo build --release -p opr-runtime" >&2; exit 2; }
for tool in wrk curl node "$py" ps; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$root/bench/results/runtime-$stamp
mkdir -p "$out/raw"
tmp=$(mktemp -d /tmp/opr-bench.XXXXXX)
server_pid=
spinners=()
cleanup() {
    [[ -n $server_pid ]] && stop_server
    ((${#spinners[@]})) && kill "${spinners[@]}" 2>/dev/null
    rm -rf -- "$tmp"
}
trap cleanup EXIT

# Functions are copied out of the tree so that nothing (__pycache__) is
# written into the repository.
cp -r "$here/functions" "$tmp/functions"

clean=(env -i PATH=/usr/bin:/bin HOME="$tmp")
names=(opr-node node-http opr-python opr-python-sync python-asyncio)
# Bun when it is installed (scripts/setup.sh installs it).
if command -v bun >/dev/null; then names+=(opr-bun bun-serve); fi
server_cmd() {
    local name=$1 dir=$tmp/$1
    mkdir -p "$dir/logs"
    case $name in
        opr-node)
            cmd=("${clean[@]}" OPEN_RUNTIMES_SECRET= "$bin" --listen 127.0.0.1:0
                --language node --server-dir "$root/runtimes/node"
                --function-dir "$tmp/functions/node"
                --logs-dir "$dir/logs" --timings-file "$dir/timings.txt") ;;
        opr-python)
            cmd=("${clean[@]}" OPEN_RUNTIMES_SECRET= OPEN_RUNTIMES_CPUS=1 "$bin"
                --listen 127.0.0.1:0
                --language python --server-dir "$root/runtimes/python"
                --function-dir "$tmp/functions/python" --interpreter "$py"
                --logs-dir "$dir/logs" --timings-file "$dir/timings.txt") ;;
        opr-python-sync)
            cmd=("${clean[@]}" OPEN_RUNTIMES_SECRET= OPEN_RUNTIMES_CPUS=1 "$bin"
                --listen 127.0.0.1:0
                --language python --server-dir "$root/runtimes/python"
                --function-dir "$tmp/functions/python-sync" --interpreter "$py"
                --logs-dir "$dir/logs" --timings-file "$dir/timings.txt") ;;
        opr-bun)
            cmd=("${clean[@]}" OPEN_RUNTIMES_SECRET= "$bin" --listen 127.0.0.1:0
                --language bun --server-dir "$root/runtimes/bun"
                --function-dir "$tmp/functions/bun"
                --logs-dir "$dir/logs" --timings-file "$dir/timings.txt") ;;
        bun-serve) cmd=("${clean[@]}" "$(command -v bun)" "$here/baseline-bun.js") ;;
        node-http) cmd=("${clean[@]}" node "$here/baseline-node.js") ;;
        python-asyncio) cmd=("${clean[@]}" "$py" "$here/baseline-python.py") ;;
    esac
}

url=
start_server() {
    local name=$1 log=$2
    server_cmd "$name"
    : >"$log"
    "${cmd[@]}" >"$log" 2>&1 &
    server_pid=$!
    local i
    for ((i = 0; i < 300; i++)); do
        url=$(grep -om1 'listening on http://[0-9.:]*' "$log" | sed 's/^listening on //') || true
        if [[ -n $url ]]; then
            # opr-runtime prints its banner once workers are up.
            [[ $name != opr-* ]] && return 0
            grep -q 'HTTP server successfully started!' "$log" && return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "$name did not start; log:" >&2
    cat "$log" >&2
    exit 1
}

tree_pids() {
    local p=$1 c
    echo "$p"
    for c in $(ps -o pid= --ppid "$p"); do tree_pids "$c"; done
}

stop_server() {
    local pids p
    pids=$(tree_pids "$server_pid")
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    # Workers normally exit with the server; make sure none is left.
    for p in $pids; do kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null; done
    server_pid=
}

# Memory of the server's process tree (KiB): one line per process to $1,
# and the sums "VmRSS RssAnon RssFile Pss" on stdout. VmRSS is the target's
# measure; RssFile is mostly the interpreter binary's pages (shared, clean).
tree_mem() {
    local detail=$1 p rss anon file pss
    local -i t_rss=0 t_anon=0 t_file=0 t_pss=0
    for p in $(tree_pids "$server_pid"); do
        read -r rss anon file < <(awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2}
            END {print r, a, f}' "/proc/$p/status" 2>/dev/null) || continue
        [[ -n $rss ]] || continue
        pss=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || pss=0
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$rss" "$anon" "$file" "${pss:-0}" \
            "$(tr '\0' ' ' <"/proc/$p/cmdline")" >>"$detail"
        t_rss+=rss t_anon+=anon t_file+=file t_pss+=${pss:-0}
    done
    echo "$t_rss $t_anon $t_file $t_pss"
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

printf 'round\tserver\tconcurrency\trps\tp50_us\tp99_us\trequests\terrors\tnon2xx\n' >"$out/results.tsv"
printf 'round\tserver\tprocesses\trss_kib\tanon_kib\tfile_kib\tpss_kib\n' >"$out/memory.tsv"
printf 'when\tload1\n' >"$out/loadavg.tsv"
printf 'start\t%s\n' "$(loadavg)" >>"$out/loadavg.tsv"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP SPIN=${SPIN:-0} bench/runtime/run.sh"
    echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
    echo "kernel: $(uname -r)"
    echo "node: $(node --version), python: $($py --version 2>&1 | cut -d' ' -f2), wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
} >"$out/machine.txt"

if [[ ${SPIN:-0} == 1 ]]; then
    touch "$out/spin"
    for ((i = 0; i < $(nproc); i++)); do
        chrt -i 0 bash -c 'while :; do :; done' &
        spinners+=($!)
    done
fi
echo "raw results: $out" >&2
for ((round = 1; round <= ROUNDS; round++)); do
    for ((k = 0; k < ${#names[@]}; k++)); do
        name=${names[$(((k + round - 1) % ${#names[@]}))]}
        start_server "$name" "$out/raw/$name-r$round.log"
        body=$(curl -sS --max-time 10 "$url/")
        [[ $body == "Hello, World!" ]] || { echo "$name answered ${body@Q}" >&2; exit 1; }
        # 100 requests on one keep-alive connection, then let it settle.
        mapfile -t urls < <(for ((i = 0; i < 100; i++)); do echo "$url/"; done)
        curl -sS --max-time 30 "${urls[@]}" >/dev/null
        sleep 1
        printf 'pid\tvmrss\trssanon\trssfile\tpss\tcmdline\n' >"$out/raw/$name-r$round.mem"
        read -r rss anon file pss < <(tree_mem "$out/raw/$name-r$round.mem")
        procs=$(($(wc -l <"$out/raw/$name-r$round.mem") - 1))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$procs" \
            "$rss" "$anon" "$file" "$pss" >>"$out/memory.tsv"
        for c in 1 32; do
            threads=$((c == 1 ? 1 : 2))
            wrk -t"$threads" -c"$c" -d"${WARMUP}s" "$url/" >/dev/null
            printf 'r%s %s c%s\t%s\n' "$round" "$name" "$c" "$(loadavg)" >>"$out/loadavg.tsv"
            raw=$out/raw/$name-c$c-r$round.txt
            wrk -t"$threads" -c"$c" -d"${DURATION}s" --latency -s "$here/report.lua" "$url/" >"$raw"
            line=$(grep '^RESULT ' "$raw") || { cat "$raw" >&2; exit 1; }
            # RESULT rps=.. p50=.. p99=.. requests=.. errors=.. non2xx=..
            read -r rps p50 p99 reqs errs non2xx < <(sed 's/[a-z0-9]*=//g; s/^RESULT //' <<<"$line")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$c" \
                "$rps" "$p50" "$p99" "$reqs" "$errs" "$non2xx" >>"$out/results.tsv"
            printf '  round %s %-15s c=%-2s %9s req/s  p50 %5s us  p99 %6s us\n' \
                "$round" "$name" "$c" "$rps" "$p50" "$p99" >&2
        done
        # Default logging is on; the function logs nothing, so no log file
        # should have been written.
        if [[ $name == opr-* ]]; then
            find "$tmp/$name/logs" -type f | wc -l | sed "s/^/r$round $name log files: /" >>"$out/machine.txt"
        fi
        stop_server
    done
done
printf 'end\t%s\n' "$(loadavg)" >>"$out/loadavg.tsv"

"$py" "$here/report.py" "$out" | tee "$out/table.md"
