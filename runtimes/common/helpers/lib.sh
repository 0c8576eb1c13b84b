#!/bin/bash
# Shared code of the helper scripts (runtime-protocol §5). Sourced, never run.
#
# The helpers are identical for every runtime; what differs per language
# lives in ../hooks (runtime.sh names the language, the other hooks are the
# lifecycle steps of §5.8). Every path the container layout fixes can be
# moved with an environment variable so the scripts also run on a host:
#
#   OPR_SERVER_DIR     /usr/local/server            server root, start's working dir
#   OPR_FUNCTION_DIR   $OPR_SERVER_DIR/src/function where start unpacks the package
#   OPR_BUILD_DIR      /usr/local/build             build working copy
#   OPR_TELEMETRY_DIR  /mnt/telemetry               holds timings.txt
#   OPR_LOGS_DIR       /mnt/logs                    passed to the server
#   OPR_CODE_DIR       $OPEN_RUNTIMES_BUILD_OUTPUT_DIR or /mnt/code   package read by start
#   OPR_HOOKS_DIR      <helpers>/../hooks
#
# Build input/output use the spec's OPEN_RUNTIMES_BUILD_INPUT_DIR and
# OPEN_RUNTIMES_BUILD_OUTPUT_DIR (both default /mnt/code).

# Guard: before-build.sh, after-build.sh, ... all source this file, often
# within one shell.
if [[ -n ${OPR_LIB_LOADED:-} ]]; then
    return 0
fi
OPR_LIB_LOADED=1

set -o pipefail

OPR_HELPERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${OPR_HOOKS_DIR:=$(cd "$OPR_HELPERS_DIR/.." && pwd)/hooks}"
: "${OPR_SERVER_DIR:=/usr/local/server}"
: "${OPR_FUNCTION_DIR:=$OPR_SERVER_DIR/src/function}"
: "${OPR_BUILD_DIR:=/usr/local/build}"
# Where a build goes when it does not fit in an in-memory build folder:
# /tmp is the runtime's own folder on the host's disk.
: "${OPR_DISK_BUILD_DIR:=/tmp/opr-build}"
: "${OPR_TELEMETRY_DIR:=/mnt/telemetry}"
: "${OPR_LOGS_DIR:=/mnt/logs}"
: "${OPR_CODE_DIR:=${OPEN_RUNTIMES_BUILD_OUTPUT_DIR:-/mnt/code}}"
OPR_TIMINGS_FILE=$OPR_TELEMETRY_DIR/timings.txt
# Exported because the server command runs in a child shell (server.sh).
export OPR_SERVER_DIR OPR_FUNCTION_DIR OPR_BUILD_DIR OPR_TELEMETRY_DIR \
    OPR_LOGS_DIR OPR_CODE_DIR OPR_HOOKS_DIR

# Package names a build writes and a start looks for, in start's preference
# order (§5.10).
OPR_PACKAGE_NAMES=(code.sqfs code.tar code.tar.gz code.gz)

# The language identity: OPR_RUNTIME_LANGUAGE and OPR_DEFAULT_ENTRYPOINT.
if [[ -f $OPR_HOOKS_DIR/runtime.sh ]]; then
    # shellcheck source=/dev/null
    source "$OPR_HOOKS_DIR/runtime.sh"
fi
: "${OPR_RUNTIME_LANGUAGE:=node}"
: "${OPR_DEFAULT_ENTRYPOINT:=index.js}"

# ---------------------------------------------------------------- output

# A progress line of §5.3: [HH:MM:SS] [open-runtimes] <message>
opr_log() {
    printf '[%(%H:%M:%S)T] [open-runtimes] %s\n' -1 "$*"
}

# ---------------------------------------------------------------- timing

# Microseconds since the epoch, from bash's own clock (no fork). The
# separator in EPOCHREALTIME follows the locale, so keep only the digits.
opr_now_us() {
    local t=$EPOCHREALTIME
    printf '%s' "${t//[!0-9]/}"
}

# Append key=<seconds since start_us, 3 decimals> to the timings file.
# Best effort: an unwritable telemetry dir must not stop a runtime.
opr_record_timing() {
    local key=$1 start_us=$2 ms
    ms=$((($(opr_now_us) - start_us + 500) / 1000))
    printf '%s=%d.%03d\n' "$key" $((ms / 1000)) $((ms % 1000)) \
        >>"$OPR_TIMINGS_FILE" 2>/dev/null || true
}

# ---------------------------------------------------------------- hooks

# Source hooks/<name>.sh if the runtime has one (§5.8). Sourcing lets a hook
# leave environment behind (a virtualenv, OPEN_RUNTIMES_CLEANUP).
opr_run_hook() {
    local hook=$OPR_HOOKS_DIR/$1.sh
    [[ -f $hook ]] || return 0
    # shellcheck source=/dev/null
    source "$hook"
}

# ---------------------------------------------------------------- archives

# Format of an archive from its first four bytes, never its name (§5.10):
# prints squashfs, gzip, zstd or tar.
opr_sniff_format() {
    local magic
    magic=$(head -c 4 -- "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')
    case $magic in
        68737173) echo squashfs ;;
        1f8b*) echo gzip ;;
        28b52ffd) echo zstd ;;
        *) echo tar ;;
    esac
}

# Unpack archive $1 (any format of §5.10) into directory $2.
opr_extract() {
    local archive=$1 dest=$2
    mkdir -p -- "$dest" || return 1
    case $(opr_sniff_format "$archive") in
        squashfs)
            # -f: write into the existing directory; quiet unless it fails.
            local out
            out=$(unsquashfs -f -no-xattrs -no-progress -d "$dest" "$archive" 2>&1) ||
                { printf '%s\n' "$out" >&2; return 1; }
            ;;
        gzip) tar -xzf "$archive" -C "$dest" ;;
        zstd) zstd -dcq -- "$archive" | tar -xf - -C "$dest" ;;
        tar) tar -xf "$archive" -C "$dest" ;;
    esac
}

# Remove everything inside directory $1, dotfiles included, keeping $1.
opr_empty_dir() {
    [[ -d $1 ]] || return 0
    find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
}

# True when $1 is a missing or empty directory.
opr_dir_is_empty() {
    [[ ! -d $1 ]] && return 0
    [[ -z $(ls -A -- "$1" 2>/dev/null) ]]
}

# ---------------------------------------------------------------- build cache

# Point the package managers' caches under the cache root (§5.12). Called by
# every build phase so the install command and the save step agree.
opr_cache_env() {
    OPR_CACHE_ROOT=${OPEN_RUNTIMES_BUILD_CACHE_ROOT:-/usr/local/cache/build}
    OPR_CACHE_ARTIFACT=${OPEN_RUNTIMES_BUILD_CACHE_ARTIFACT:-/cache/stores.sqfs}
    export npm_config_cache=$OPR_CACHE_ROOT/npm
    export YARN_CACHE_FOLDER=$OPR_CACHE_ROOT/yarn
    export npm_config_store_dir=$OPR_CACHE_ROOT/pnpm-store
    export XDG_CACHE_HOME=$OPR_CACHE_ROOT/xdg-cache
    export XDG_STATE_HOME=$OPR_CACHE_ROOT/xdg-state
    export BUN_INSTALL_CACHE_DIR=$OPR_CACHE_ROOT/bun
    export PIP_CACHE_DIR=$OPR_CACHE_ROOT/pip
}

# Step 1 of §5.4. Never fails the build.
opr_cache_restore() {
    opr_cache_env
    mkdir -p -- "$OPR_CACHE_ROOT" 2>/dev/null || true
    if [[ ! -f $OPR_CACHE_ARTIFACT ]]; then
        opr_log "Build cache miss."
        return 0
    fi
    if opr_extract "$OPR_CACHE_ARTIFACT" "$OPR_CACHE_ROOT" >/dev/null 2>&1; then
        opr_log "Build cache hit."
    else
        opr_log "Build cache miss. (could not restore $OPR_CACHE_ARTIFACT)"
    fi
    return 0
}

# Write the cache root into file $1: squashfs when mksquashfs exists
# (timestamps pinned so an unchanged cache gives identical bytes), else a
# tar.zst or tar.gz; start-side sniffing tells them apart.
opr_cache_pack() {
    local dest=$1 timeout_cmd=()
    local secs=${OPEN_RUNTIMES_BUILD_CACHE_SAVE_TIMEOUT_SECONDS:-}
    if [[ $secs =~ ^[0-9]+$ ]] && ((secs > 0)); then
        timeout_cmd=(timeout "$secs")
    fi
    if command -v mksquashfs >/dev/null; then
        "${timeout_cmd[@]}" mksquashfs "$OPR_CACHE_ROOT" "$dest" -comp lz4 -b 1M \
            -noappend -no-progress -all-time 0 -mkfs-time 0 >/dev/null 2>&1
    elif command -v zstd >/dev/null; then
        # shellcheck disable=SC2016 # expanded by the inner bash
        "${timeout_cmd[@]}" bash -o pipefail -c \
            'tar -C "$1" --mtime=@0 --sort=name -cf - . | zstd -q -c >"$2"' \
            _ "$OPR_CACHE_ROOT" "$dest"
    else
        # shellcheck disable=SC2016 # expanded by the inner bash
        "${timeout_cmd[@]}" bash -o pipefail -c \
            'tar -C "$1" --mtime=@0 --sort=name -cf - . | gzip -n -c >"$2"' \
            _ "$OPR_CACHE_ROOT" "$dest"
    fi
}

# Step 8 of §5.4: pack the cache root into the artifact. Never fails the build.
opr_cache_save() {
    opr_cache_env
    local dir tmp max size
    dir=$(dirname -- "$OPR_CACHE_ARTIFACT")
    mkdir -p -- "$OPR_CACHE_ROOT" "$dir" 2>/dev/null
    tmp=$(mktemp "$dir/.stores.XXXXXX" 2>/dev/null) || {
        opr_log "Build cache save skipped: cannot write to $dir"
        return 0
    }
    if ! opr_cache_pack "$tmp"; then
        rm -f -- "$tmp"
        opr_log "Build cache save skipped: packing the cache failed or timed out"
        return 0
    fi
    max=${OPEN_RUNTIMES_BUILD_CACHE_MAX_SIZE_BYTES:-}
    size=$(stat -c %s -- "$tmp")
    if [[ $max =~ ^[0-9]+$ ]] && ((max > 0 && size > max)); then
        rm -f -- "$tmp"
        opr_log "Build cache save skipped: $size bytes exceeds the limit of $max bytes"
        return 0
    fi
    if [[ -f $OPR_CACHE_ARTIFACT ]] && cmp -s -- "$tmp" "$OPR_CACHE_ARTIFACT"; then
        rm -f -- "$tmp"
        opr_log "Build cache save skipped: artifact unchanged"
        return 0
    fi
    if mv -f -- "$tmp" "$OPR_CACHE_ARTIFACT"; then
        opr_log "Build cache saved. ($size bytes)"
    else
        rm -f -- "$tmp"
        opr_log "Build cache save skipped: cannot write $OPR_CACHE_ARTIFACT"
    fi
    return 0
}

# ---------------------------------------------------------------- installed dependencies

# Reuse of the installed dependency tree (an opr addition to §5.12, see
# docs/builds.md). The folder an install step fills (OPR_DEPENDENCY_DIR from
# hooks/runtime.sh: node_modules, runtime-env) is kept inside the cache root,
# and so inside this cacheKey's artifact, as opr-deps/<dir>.sqfs, next to
# opr-deps/<dir>.inputs: what produced it. A build whose inputs are the same
# gets the tree back before its install step; any difference and the install
# starts from scratch and its tree replaces the stored one.

# Inputs of the stored tree: one line each, never a secret in clear (the
# command and the variables are hashed).
opr_sha256() { sha256sum | cut -c1-64; }
opr_deps_inputs() {
    local f name
    printf 'opr-deps 1\n'
    printf 'language %s\n' "$OPR_RUNTIME_LANGUAGE"
    printf 'arch %s\n' "$(uname -m)"
    if declare -F opr_toolchain_version >/dev/null; then
        opr_toolchain_version 2>&1 | sed 's/^/toolchain /'
    fi
    # A virtualenv holds absolute paths into the build folder.
    printf 'build-dir %s\n' "$OPR_BUILD_DIR"
    printf 'command %s\n' "$(printf '%s' "$OPR_INSTALL_COMMAND" | opr_sha256)"
    for f in "${OPR_DEPENDENCY_FILES[@]}"; do
        if [[ -f $f ]]; then
            printf 'file %s %s\n' "$f" "$(opr_sha256 <"$f")"
        else
            printf 'file %s absent\n' "$f"
        fi
    done
    # Variables the package managers read (NODE_ENV, npm_config_*, PIP_*, ...).
    while IFS= read -r name; do
        printf 'env %s %s\n' "$name" "$(printf '%s' "${!name}" | opr_sha256)"
    done < <(compgen -e | grep -E '^(NODE_|NPM_|npm_config_|YARN_|PNPM_|BUN_|PIP_|PYTHON|UV_|POETRY_)' | LC_ALL=C sort)
}

# The inputs (fields "kind name") of $2 that differ from $1, comma-separated.
opr_deps_changed() {
    LC_ALL=C comm -13 <(LC_ALL=C sort <<<"$1") <(LC_ALL=C sort <<<"$2") |
        awk '{ k = ($1 == "file" || $1 == "env") ? $2 : $1; if (!(k in seen)) { seen[k]; out = out sep k; sep = ", " } }
             END { print out }'
}

# Before the build-prepare hook, in the build folder: restore the stored tree
# when the inputs are unchanged, and export OPR_DEPENDENCIES_REUSED=1 then
# (the executor's default install step skips itself on it; any other command
# runs on top of the restored tree). Sets OPR_DEPS_INPUTS for opr_deps_save.
# Never fails the build.
opr_deps_restore() {
    OPR_DEPENDENCIES_REUSED=0
    export OPR_DEPENDENCIES_REUSED
    OPR_DEPS_INPUTS=
    local dir=${OPR_DEPENDENCY_DIR:-} store f found=0 changed
    [[ -n $dir && -n ${OPR_INSTALL_COMMAND:-} ]] || return 0
    # Only where a cache is kept (no cacheKey: no artifact folder).
    [[ -d $(dirname -- "$OPR_CACHE_ARTIFACT") ]] || return 0
    for f in "${OPR_DEPENDENCY_FILES[@]}"; do
        [[ -f $f ]] && found=1
    done
    ((found)) || return 0
    case ${OPR_BUILD_DEPENDENCY_REUSE:-enabled} in
        disabled | false | 0 | no | off)
            opr_log "Installed dependencies: reuse disabled (OPR_BUILD_DEPENDENCY_REUSE)."
            return 0
            ;;
    esac
    if [[ -e $dir || -L $dir ]]; then
        opr_log "Installed dependencies: not reused, the source contains $dir."
        return 0
    fi
    # Local paths (file:, -e ., -r other.txt) name files the inputs do not
    # cover: a restored tree could hold an old copy of them. They are looked
    # for in OPR_DEPENDENCY_LOCAL_FILES when the hooks name those (files
    # whose own syntax the pattern would mistake), else in every input file.
    local -a scanned=("${OPR_DEPENDENCY_FILES[@]}")
    if declare -p OPR_DEPENDENCY_LOCAL_FILES >/dev/null 2>&1; then
        scanned=("${OPR_DEPENDENCY_LOCAL_FILES[@]}")
    fi
    if [[ -n ${OPR_DEPENDENCY_LOCAL_PATTERN:-} ]]; then
        for f in "${scanned[@]}"; do
            if [[ -f $f ]] && grep -qE -- "$OPR_DEPENDENCY_LOCAL_PATTERN" "$f"; then
                opr_log "Installed dependencies: not reused, $f refers to local files."
                return 0
            fi
        done
    fi
    OPR_DEPS_INPUTS=$(opr_deps_inputs) || {
        OPR_DEPS_INPUTS=
        return 0
    }
    store=$OPR_CACHE_ROOT/opr-deps
    if [[ ! -f $store/$dir.sqfs || ! -f $store/$dir.inputs ]]; then
        opr_log "Installed dependencies: none cached yet."
        return 0
    fi
    if [[ $(<"$store/$dir.inputs") != "$OPR_DEPS_INPUTS" ]]; then
        changed=$(opr_deps_changed "$(<"$store/$dir.inputs")" "$OPR_DEPS_INPUTS")
        opr_log "Installed dependencies: not reused, changed: ${changed:-inputs}."
        return 0
    fi
    if opr_extract "$store/$dir.sqfs" "$dir" >/dev/null 2>&1; then
        OPR_DEPENDENCIES_REUSED=1
        opr_log "Installed dependencies: $dir restored from the build cache (inputs unchanged)."
    else
        rm -rf -- "$dir"
        opr_log "Installed dependencies: not reused, could not restore $dir."
    fi
    return 0
}

# After a successful install step, before the compile and pack hooks change
# the tree: store it with its inputs, unless it was restored unchanged.
# Bounded like the cache save. Never fails the build.
opr_deps_save() {
    local dir=${OPR_DEPENDENCY_DIR:-} store tmp size max timeout_cmd=()
    [[ -n ${OPR_DEPS_INPUTS:-} && ${OPR_DEPENDENCIES_REUSED:-0} != 1 ]] || return 0
    [[ -d $OPR_BUILD_DIR/$dir ]] || return 0
    command -v mksquashfs >/dev/null || return 0
    local secs=${OPEN_RUNTIMES_BUILD_CACHE_SAVE_TIMEOUT_SECONDS:-}
    if [[ $secs =~ ^[0-9]+$ ]] && ((secs > 0)); then
        timeout_cmd=(timeout "$secs")
    fi
    store=$OPR_CACHE_ROOT/opr-deps
    if ! mkdir -p -- "$store" 2>/dev/null || ! tmp=$(mktemp "$store/.$dir.XXXXXX" 2>/dev/null); then
        opr_log "Installed dependencies: not saved, cannot write to $store."
        return 0
    fi
    if ! "${timeout_cmd[@]}" mksquashfs "$OPR_BUILD_DIR/$dir" "$tmp" -comp lz4 -b 1M \
        -noappend -no-progress -no-xattrs -mkfs-time 0 >/dev/null 2>&1; then
        rm -f -- "$tmp"
        opr_log "Installed dependencies: not saved, packing $dir failed or timed out."
        return 0
    fi
    size=$(stat -c %s -- "$tmp")
    max=${OPEN_RUNTIMES_BUILD_CACHE_MAX_SIZE_BYTES:-}
    if [[ $max =~ ^[0-9]+$ ]] && ((max > 0 && size > max)); then
        rm -f -- "$tmp"
        opr_log "Installed dependencies: not saved, $size bytes exceeds the limit of $max bytes."
        return 0
    fi
    # The inputs go last: a tree never sits next to inputs it was not made from.
    rm -f -- "$store/$dir.inputs"
    if mv -f -- "$tmp" "$store/$dir.sqfs" &&
        printf '%s\n' "$OPR_DEPS_INPUTS" >"$store/.$dir.inputs" &&
        mv -f -- "$store/.$dir.inputs" "$store/$dir.inputs"; then
        opr_log "Installed dependencies: $dir saved to the build cache. ($size bytes)"
    else
        rm -f -- "$tmp" "$store/.$dir.inputs"
        opr_log "Installed dependencies: not saved, cannot write $store."
    fi
    return 0
}

# After a failed install command with status $1: when the build folder is
# in memory (a size-bounded tmpfs, as opr's process backend makes it) and
# full, or the command was killed, say so; "No space left on device" alone
# does not tell that the limit is the folder's. Returns 3 in those two cases.
opr_build_dir_explain() {
    local status=$1 type blocks avail bsize size_mib used_mib
    read -r type blocks avail bsize < <(stat -f -c '%T %b %a %S' -- "$OPR_BUILD_DIR" 2>/dev/null) || return 0
    [[ $type == tmpfs && $blocks =~ ^[0-9]+$ && $avail =~ ^[0-9]+$ && $bsize =~ ^[0-9]+$ ]] || return 0
    size_mib=$((blocks * bsize / 1048576))
    used_mib=$(((blocks - avail) * bsize / 1048576))
    if ((avail * bsize < 1048576)); then
        opr_log "Error: the build folder $OPR_BUILD_DIR is full: it is held in memory, at most $size_mib MiB (opr executor: OPR_EXECUTOR_BUILD_TMPFS_MB; 0 builds on disk)."
        return 3
    elif ((status == 137)); then
        opr_log "Error: the install command was killed, probably out of memory: the build folder $OPR_BUILD_DIR is held in memory and uses $used_mib MiB of the build's memory limit (opr executor: OPR_EXECUTOR_BUILD_TMPFS_MB=0 builds on disk)."
        return 3
    fi
    return 0
}

# Marker in the cache root: builds of this cache key go to disk at once.
OPR_ON_DISK_MARKER=.opr-build-on-disk

# After a build step failed with status $1: if the in-memory build folder
# was too small (full, or the install killed for memory), frees it and
# starts the whole build again with the folder on disk, once, and marks the
# cache so that the next build of this key starts there. Returns when there
# is nothing to retry (the caller then fails the build).
opr_retry_on_disk() {
    opr_build_dir_explain "$1"
    (($? == 3)) || return 0
    [[ $OPR_BUILD_DIR != "$OPR_DISK_BUILD_DIR" && -n ${OPR_BUILD_SCRIPT:-} ]] || return 0
    opr_log "Retrying the build with the build folder on disk ($OPR_DISK_BUILD_DIR)."
    cd / || return 0
    find "$OPR_BUILD_DIR" -mindepth 1 -delete 2>/dev/null
    opr_cache_env
    mkdir -p -- "$OPR_CACHE_ROOT" 2>/dev/null && : >"$OPR_CACHE_ROOT/$OPR_ON_DISK_MARKER" 2>/dev/null
    OPR_BUILD_DIR=$OPR_DISK_BUILD_DIR
    export OPR_BUILD_DIR
    exec bash "$OPR_BUILD_SCRIPT" "${OPR_INSTALL_COMMAND:-}"
}

# Called after the cache is restored: a build of this key that did not fit
# in memory before goes to disk at once.
opr_choose_build_dir() {
    [[ -f $OPR_CACHE_ROOT/$OPR_ON_DISK_MARKER && $OPR_BUILD_DIR != "$OPR_DISK_BUILD_DIR" ]] || return 0
    opr_log "Build folder on disk ($OPR_DISK_BUILD_DIR): an earlier build of this cache key did not fit in memory."
    OPR_BUILD_DIR=$OPR_DISK_BUILD_DIR
    export OPR_BUILD_DIR
}

# ---------------------------------------------------------------- packaging

# The compression actually used for packaged tree $1 (§5.10): resolves auto,
# unknown values and methods whose tool is missing.
opr_choose_compression() {
    local root=$1 method=${OPEN_RUNTIMES_BUILD_COMPRESSION:-gzip} kib
    case $method in
        gzip | none | zstd | squashfs | skip | auto) ;;
        *) method=gzip ;;
    esac
    if [[ $method == auto ]]; then
        kib=$(du -sk -- "$root" | cut -f1)
        if ((kib < 5120)); then method=none; else method=gzip; fi
    fi
    if [[ $method == zstd ]] && ! command -v zstd >/dev/null; then
        opr_log "Warning: zstd is not installed, using gzip." >&2
        method=gzip
    fi
    if [[ $method == squashfs ]] && ! command -v mksquashfs >/dev/null; then
        opr_log "Warning: mksquashfs is not installed, using gzip." >&2
        method=gzip
    fi
    printf '%s' "$method"
}

# A dotenv value, quoted only when the shell would otherwise read it
# differently (start.sh sources the file).
opr_env_value() {
    if [[ $1 =~ ^[A-Za-z0-9._/@%+,:=-]*$ ]]; then
        printf '%s' "$1"
    else
        printf '%q' "$1"
    fi
}

# The .open-runtimes file of §5.9 at the packaged root $1.
opr_write_open_runtimes() {
    local root=$1 method=$2
    {
        printf 'OPEN_RUNTIMES_ENTRYPOINT=%s\n' \
            "$(opr_env_value "${OPEN_RUNTIMES_ENTRYPOINT:-$OPR_DEFAULT_ENTRYPOINT}")"
        printf 'OPEN_RUNTIMES_CLEANUP=%s\n' "$(opr_env_value "${OPEN_RUNTIMES_CLEANUP:-none}")"
        printf 'OPEN_RUNTIMES_COMPRESSION=%s\n' "$method"
    } >"$root/.open-runtimes"
}

# Write the package of tree $1 into directory $2 with method $3. Packages of
# an earlier build are excluded from the new one (top level only: that is
# where a previous build in the same /mnt/code left them).
opr_pack() {
    local root=$1 out=$2 method=$3 name tmp
    local excludes=() sq_excludes=()
    for name in "${OPR_PACKAGE_NAMES[@]}"; do
        excludes+=("--exclude=./$name")
        sq_excludes+=("$name")
    done
    mkdir -p -- "$out" || return 1
    # Packages from an earlier build in the output dir would shadow the new
    # one at start (code.sqfs wins over code.tar.gz, .extracted over both).
    for name in "${OPR_PACKAGE_NAMES[@]}" .extracted; do
        rm -f -- "${out:?}/$name"
    done

    if [[ $method == skip ]]; then
        tar -C "$root" --anchored "${excludes[@]}" -cf - . | tar -C "$out" -xf - &&
            : >"$out/.extracted"
        return
    fi

    # Write under a temporary name so a failed pack leaves no package behind.
    tmp=$(mktemp "$out/.code.XXXXXX") || return 1
    case $method in
        squashfs)
            rm -f -- "$tmp"
            mksquashfs "$root" "$tmp" -comp lz4 -b 1M -noappend -no-progress \
                -e "${sq_excludes[@]}" -e "$(basename -- "$tmp")" >/dev/null
            ;;
        none) tar -C "$root" --anchored "${excludes[@]}" -cf "$tmp" . ;;
        zstd) tar -C "$root" --anchored "${excludes[@]}" -cf - . | zstd -q -c >"$tmp" ;;
        *) tar -C "$root" --anchored "${excludes[@]}" -cf - . | gzip -c >"$tmp" ;;
    esac || { rm -f -- "$tmp"; return 1; }
    if [[ $method == squashfs ]]; then name=code.sqfs; else name=code.tar.gz; fi
    chmod 644 -- "$tmp" && mv -f -- "$tmp" "$out/$name"
}

# Optional manifest (§5.12), written next to the package as
# code.manifest.json: {"version":1,"files":[{"path":…,"size":…},…]}.
opr_write_manifest() {
    local root=$1 out=$2 max=${OPEN_RUNTIMES_BUILD_MANIFEST_MAX_FILES:-10000}
    [[ $max =~ ^[0-9]+$ ]] || max=10000
    local rec path size sep='' count=0 json
    {
        printf '{"version":1,"files":['
        # Records "<size> <path>", NUL-terminated, sorted by path.
        while IFS= read -r -d '' rec; do
            ((count < max)) || break
            size=${rec%% *}
            path=${rec#* }
            # JSON string escaping of the characters a file name can hold.
            json=${path//\\/\\\\}
            json=${json//\"/\\\"}
            json=${json//$'\t'/\\t}
            json=${json//$'\n'/\\n}
            json=${json//$'\r'/\\r}
            printf '%s{"path":"%s","size":%s}' "$sep" "$json" "$size"
            sep=,
            ((count++))
        done < <(cd "$root" && find . -type f -printf '%s %P\0' | LC_ALL=C sort -z -t ' ' -k 2)
        printf ']}\n'
    } >"$out/code.manifest.json"
}
