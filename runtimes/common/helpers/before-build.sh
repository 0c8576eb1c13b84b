#!/bin/bash
# Build, first half (runtime-protocol §5.4 steps 1-3): restore the caches,
# copy the source into the build directory and run the build-prepare hook.
# build.sh sources this file so that what the hook sets up (a Python
# virtualenv, for instance) is still active for the install command; it can
# also be run on its own.

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OPR_BUILD_INPUT=${OPEN_RUNTIMES_BUILD_INPUT_DIR:-/mnt/code}

opr_cache_restore
opr_choose_build_dir

opr_log "Environment preparation started."
if opr_dir_is_empty "$OPR_BUILD_INPUT"; then
    opr_log "Error: No source code found. Ensure your source isn't empty."
    exit 1
fi

mkdir -p -- "$OPR_BUILD_DIR" || exit 1
# "/." copies the directory's contents, dotfiles included.
if ! cp -a -- "$OPR_BUILD_INPUT/." "$OPR_BUILD_DIR/"; then
    opr_retry_on_disk 1
    exit 1
fi

cd -- "$OPR_BUILD_DIR" || exit 1
# The installed dependencies of an earlier build with the same inputs
# (lib.sh), before build-prepare so that a restored virtualenv is kept.
opr_deps_restore
if ! opr_run_hook build-prepare; then
    opr_log "Error: The build-prepare step failed."
    exit 1
fi
cd -- "$OPR_BUILD_DIR" || exit 1
opr_log "Environment preparation finished."
