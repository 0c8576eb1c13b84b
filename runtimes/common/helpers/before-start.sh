#!/bin/bash
# Start, first half (runtime-protocol §5.5 steps 1-4): unpack the package
# into the function directory, load its .open-runtimes and run the
# start-prepare hook. start.sh sources this file so the loaded environment
# reaches the server.

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p -- "$OPR_TELEMETRY_DIR" 2>/dev/null

# Unpack the first package present, in the order of §5.10.
opr_unpack_archive() {
    local name
    for name in "${OPR_PACKAGE_NAMES[@]}"; do
        if [[ -f $OPR_CODE_DIR/$name ]]; then
            if ! opr_extract "$OPR_CODE_DIR/$name" "$OPR_FUNCTION_DIR"; then
                opr_log "Error: Could not extract $OPR_CODE_DIR/$name."
                exit 1
            fi
            return 0
        fi
    done
    opr_log "Code archive not found."
    exit 1
}

# Link the pre-extracted tree (compression "skip") into the function dir.
opr_link_tree() {
    local entry name code_dir
    # Absolute targets, so the links hold wherever the dir is named from.
    code_dir=$(cd -- "$OPR_CODE_DIR" && pwd) || return 1
    opr_empty_dir "$OPR_FUNCTION_DIR"
    mkdir -p -- "$OPR_FUNCTION_DIR" || return 1
    shopt -s dotglob nullglob
    for entry in "$code_dir"/*; do
        name=${entry##*/}
        case $name in
            code.sqfs | code.tar | code.tar.gz | code.gz | .extracted) continue ;;
        esac
        ln -s -- "$entry" "$OPR_FUNCTION_DIR/$name" || {
            shopt -u dotglob nullglob
            return 1
        }
    done
    shopt -u dotglob nullglob
}

opr_t0=$(opr_now_us)
if [[ -e $OPR_CODE_DIR/.extracted ]]; then
    if opr_link_tree; then
        opr_record_timing symlink "$opr_t0"
    else
        opr_empty_dir "$OPR_FUNCTION_DIR"
        opr_unpack_archive
        opr_record_timing extract "$opr_t0"
    fi
else
    opr_unpack_archive
    opr_record_timing extract "$opr_t0"
fi

# The build's values win over the container's (§5.9): that is how the
# entrypoint is fixed at build time.
if [[ -f $OPR_FUNCTION_DIR/.open-runtimes ]]; then
    set -a
    # shellcheck source=/dev/null
    source "$OPR_FUNCTION_DIR/.open-runtimes"
    set +a
fi

cd -- "$OPR_SERVER_DIR" || exit 1
opr_log "Environment preparation started."
opr_t0=$(opr_now_us)
if ! opr_run_hook start-prepare; then
    opr_log "Error: The start-prepare step failed."
    exit 1
fi
cd -- "$OPR_SERVER_DIR" || exit 1
opr_record_timing prepare "$opr_t0"
opr_log "Environment preparation finished."
opr_log "Runtime started."
