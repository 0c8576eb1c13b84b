#!/bin/bash
# Entry point of a build container (runtime-protocol §5.3, §5.4):
#
#   helpers/build.sh "<install command>"
#
# Prepares /usr/local/build from the source in /mnt/code, runs the install
# command there and writes the package back to /mnt/code.

helpers_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Part of what decides whether installed dependencies can be reused (lib.sh).
OPR_INSTALL_COMMAND=${1:-}
# Run again, with the build folder on disk, when it does not fit in memory.
OPR_BUILD_SCRIPT=$helpers_dir/build.sh

# Sourced, not run: the environment prepared for the install command must
# survive into it (see before-build.sh).
# shellcheck source=before-build.sh
source "$helpers_dir/before-build.sh"

opr_log "Build command execution started."
( cd -- "$OPR_BUILD_DIR" && bash -c "${1:-}" )
status=$?
if ((status != 0)); then
    opr_retry_on_disk "$status"
    exit "$status"
fi
opr_log "Build command execution finished."

# shellcheck source=after-build.sh
source "$helpers_dir/after-build.sh"
