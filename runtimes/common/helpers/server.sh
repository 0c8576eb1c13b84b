#!/bin/bash
# Launches the runtime server (runtime-protocol §5.6). Normally called by
# start.sh as `bash helpers/server.sh`.

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# A runtime that needs more than a command (none of ours today) provides
# hooks/server.sh.
if [[ -f $OPR_HOOKS_DIR/server.sh ]]; then
    # shellcheck source=/dev/null
    source "$OPR_HOOKS_DIR/server.sh"
    exit
fi

# Images set OPEN_RUNTIMES_SERVER_COMMAND (§5.2); this default serves hosts
# and the process backend, where the paths may be moved (see lib.sh).
if [[ -z ${OPEN_RUNTIMES_SERVER_COMMAND:-} ]]; then
    printf -v OPEN_RUNTIMES_SERVER_COMMAND \
        'opr-runtime --language %q --server-dir %q --function-dir %q --logs-dir %q --timings-file %q' \
        "$OPR_RUNTIME_LANGUAGE" "$OPR_SERVER_DIR" "$OPR_FUNCTION_DIR" \
        "$OPR_LOGS_DIR" "$OPR_TIMINGS_FILE"
fi
exec bash -c "$OPEN_RUNTIMES_SERVER_COMMAND"
