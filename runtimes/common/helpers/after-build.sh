#!/bin/bash
# Build, second half (runtime-protocol §5.4 steps 5-8): compile and pack
# hooks, the .open-runtimes file, the package, the manifest and the cache.

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OPR_BUILD_OUTPUT=${OPEN_RUNTIMES_BUILD_OUTPUT_DIR:-/mnt/code}

# The installed dependencies as the install step left them, before compile
# and pack change the tree (lib.sh; does nothing outside build.sh).
opr_deps_save

# Hooks run from the server root, as upstream's do.
cd -- "$OPR_SERVER_DIR" 2>/dev/null || cd -- "$OPR_BUILD_DIR" || exit 1
if ! opr_run_hook compile; then
    opr_log "Error: The compile step failed."
    exit 1
fi
opr_log "Build packaging started."
if ! opr_run_hook pack; then
    opr_log "Error: The pack step failed."
    exit 1
fi

# The packaged root: the whole build dir, or the output directory in it.
opr_root=$OPR_BUILD_DIR
if [[ -n ${OPEN_RUNTIMES_OUTPUT_DIRECTORY:-} ]]; then
    opr_root=$OPR_BUILD_DIR/${OPEN_RUNTIMES_OUTPUT_DIRECTORY#/}
fi
if opr_dir_is_empty "$opr_root"; then
    opr_log "Error: No build output found. Ensure your output directory isn't empty."
    exit 1
fi

opr_method=$(opr_choose_compression "$opr_root")
opr_write_open_runtimes "$opr_root" "$opr_method" || exit 1
if ! opr_pack "$opr_root" "$OPR_BUILD_OUTPUT" "$opr_method"; then
    opr_log "Error: Could not write the package to $OPR_BUILD_OUTPUT."
    exit 1
fi
opr_log "Build packaging finished."

# Both best effort (§5.12).
case ${OPEN_RUNTIMES_BUILD_MANIFEST:-} in
    enabled | true | 1 | yes)
        opr_write_manifest "$opr_root" "$OPR_BUILD_OUTPUT" ||
            opr_log "Warning: Could not write the build manifest."
        ;;
esac
opr_cache_save

opr_log "Build finished."
exit 0
