#!/bin/bash
# Entry point of a runtime container (runtime-protocol §5.3, §5.5):
#
#   helpers/start.sh "bash helpers/server.sh"
#
# Unpacks the package from /mnt/code, then runs the given command, passing
# its output through and timing how long the server takes to come up.

helpers_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
launch=${1:-}

# Sourced, not run: .open-runtimes and the start-prepare hook set
# environment the server must see.
# shellcheck source=before-start.sh
source "$helpers_dir/before-start.sh"

# Copy lines through until the server announces itself, record startup=,
# then hand the rest to cat (reading line by line in bash is slow). The
# timing is written before the banner is echoed, so whoever sees the banner
# also finds startup= in the timings file.
opr_watch_output() {
    local t0=$1 line
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line == *"HTTP server successfully started"* ||
            $line == *"server started on http://"* ]]; then
            opr_record_timing startup "$t0"
            printf '%s\n' "$line"
            exec cat
        fi
        printf '%s\n' "$line"
    done
}

# The server writes into a FIFO read by the watcher rather than into a
# pipeline, so that this shell knows the server's pid: it forwards SIGTERM
# to it (this script is PID 1 in a container) and returns its exit status.
opr_fifo_dir=$(mktemp -d) || exit 1
mkfifo "$opr_fifo_dir/output" || exit 1

opr_t0=$(opr_now_us)
bash -c "$launch" >"$opr_fifo_dir/output" 2>&1 &
opr_server_pid=$!
opr_watch_output "$opr_t0" <"$opr_fifo_dir/output" &
opr_watcher_pid=$!

# Background jobs of a script ignore SIGINT, so every signal becomes TERM.
trap 'kill -TERM "$opr_server_pid" 2>/dev/null' TERM INT HUP
while :; do
    wait "$opr_server_pid"
    opr_status=$?
    # wait also returns when a trapped signal arrives; go on until the
    # server has really exited.
    kill -0 "$opr_server_pid" 2>/dev/null || break
done
trap - TERM INT HUP

wait "$opr_watcher_pid"
rm -rf -- "$opr_fifo_dir"
exit "$opr_status"
