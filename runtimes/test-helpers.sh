#!/bin/bash
# Self-checking test of the runtime helper scripts (runtime-protocol §5.3-§5.12)
# for every runtime under runtimes/. Runs on the host: every container path
# is moved into a temporary directory with the OPR_* / OPEN_RUNTIMES_*
# overrides, so nothing outside it is written.
#
#   bash runtimes/test-helpers.sh            # all runtimes
#   bash runtimes/test-helpers.sh python     # one runtime
#
# Needs bash, tar, gzip, zstd, squashfs-tools, python3 (with venv). The last
# line is "N passed, N failed"; the exit status is non-zero on any failure.

# Commands handed to the helpers are single-quoted on purpose: they expand
# inside the build or server shell.
# shellcheck disable=SC2016

set -u

here=$(cd "$(dirname "$0")" && pwd)
langs=("$@")
((${#langs[@]})) || langs=(node python bun)

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   - %s\n' "$1"; }
not_ok() {
    failed=$((failed + 1))
    printf 'FAIL - %s\n' "$1"
    # Show the output of the step that failed, if any.
    [[ -n ${2:-} && -f $2 ]] && sed 's/^/       | /' "$2" | tail -n 30
}
# check "description" command...: passes when the command succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc" "${last_log:-}"; fi
}

for tool in tar gzip zstd mksquashfs unsquashfs python3 od; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

work=$(mktemp -d /tmp/opr-helpers-test.XXXXXX)
trap 'rm -rf -- "$work"' EXIT

# ------------------------------------------------------------------ helpers

magic() { head -c 4 -- "$1" | od -An -tx1 | tr -d ' \n'; }
has_line() { grep -qxF -- "$2" "$1"; }
has_text() { grep -qF -- "$2" "$1"; }
# Progress line of §5.3 with exactly this message (has_progress) or a
# message starting with it (has_progress_prefix).
# shellcheck disable=SC2001
re_quote() { sed 's/[].[*^$()+?{}|\\]/\\&/g' <<<"$1"; }
has_progress() { grep -qE "^\[[0-9]{2}:[0-9]{2}:[0-9]{2}\] \[open-runtimes\] $(re_quote "$2")\$" "$1"; }
has_progress_prefix() { grep -qE "^\[[0-9]{2}:[0-9]{2}:[0-9]{2}\] \[open-runtimes\] $(re_quote "$2")" "$1"; }
# The lines of file $1 that match the patterns $2... appear in this order.
in_order() {
    local file=$1 n=0 pat
    shift
    for pat in "$@"; do
        n=$(awk -v start="$n" -v pat="$pat" 'NR > start && index($0, pat) { print NR; exit }' "$file")
        [[ -n $n ]] || return 1
    done
}
tar_list() { # list any tar (gzip, zstd, plain) by sniffing like start.sh
    case $(magic "$1") in
        1f8b*) tar -tzf "$1" ;;
        28b52ffd) zstd -dcq "$1" | tar -tf - ;;
        *) tar -tf "$1" ;;
    esac
}
is_gzip() { [[ $(magic "$1") == 1f8b* ]]; }
is_zstd() { [[ $(magic "$1") == 28b52ffd ]]; }
is_squashfs() { [[ $(magic "$1") == 68737173 ]]; }
is_plain_tar() { ! is_gzip "$1" && ! is_zstd "$1" && tar -tf "$1" >/dev/null 2>&1; }
timing_line() { grep -qE "^$2=[0-9]+\.[0-9]{3}\$" "$1"; }

# A fresh sandbox $1 with the directories a container would have.
# Sets the environment the helpers read; everything points inside $1.
sandbox() {
    local box=$1
    rm -rf -- "$box"
    mkdir -p "$box"/{source,code,build,server/src/function,telemetry,logs,cache-store}
    export OPEN_RUNTIMES_BUILD_INPUT_DIR=$box/source
    export OPEN_RUNTIMES_BUILD_OUTPUT_DIR=$box/code
    export OPR_CODE_DIR=$box/code
    export OPR_BUILD_DIR=$box/build
    export OPR_SERVER_DIR=$box/server
    export OPR_FUNCTION_DIR=$box/server/src/function
    export OPR_TELEMETRY_DIR=$box/telemetry
    export OPR_LOGS_DIR=$box/logs
    export OPEN_RUNTIMES_BUILD_CACHE_ROOT=$box/cache-root
    export OPEN_RUNTIMES_BUILD_CACHE_ARTIFACT=$box/cache-store/stores.sqfs
    unset OPEN_RUNTIMES_BUILD_COMPRESSION OPEN_RUNTIMES_OUTPUT_DIRECTORY \
        OPEN_RUNTIMES_ENTRYPOINT OPEN_RUNTIMES_CLEANUP OPEN_RUNTIMES_SERVER_COMMAND \
        OPEN_RUNTIMES_BUILD_MANIFEST
}

# A tiny function source for language $2 in directory $1: the entrypoint,
# a dotfile, a nested file and a stale package left by an earlier build.
fixture() {
    local dir=$1 lang=$2
    mkdir -p "$dir/lib"
    if [[ $lang == python ]]; then
        printf 'def main(context):\n    return context.res.text("hi")\n' >"$dir/main.py"
    elif [[ $lang == bun ]]; then
        printf 'export default async (context: any) => context.res.text("hi");\n' >"$dir/index.ts"
    else
        printf 'module.exports = async (context) => context.res.text("hi");\n' >"$dir/index.js"
    fi
    echo secret >"$dir/.env.local"
    echo nested >"$dir/lib/util.txt"
    echo stale >"$dir/code.tar.gz"
}

# run_build <log> <install command>: build.sh with output captured.
# Both are called the way platforms call them: a relative path from the
# server folder, whose helpers then change directory.
run_build() {
    last_log=$1
    (cd "$helpers/.." && bash helpers/build.sh "$2") >"$1" 2>&1
}
run_start() {
    last_log=$1
    (cd "$helpers/.." && bash helpers/start.sh "$2") >"$1" 2>&1
}

# Fake server: prints a line, the banner, then what the server would see.
fake_server='echo "booting"; echo "HTTP server successfully started!"; echo "ENTRY=$OPEN_RUNTIMES_ENTRYPOINT"; echo "CLEANUP=$OPEN_RUNTIMES_CLEANUP"; echo "VENV=${VIRTUAL_ENV:-}"; sleep 0.2'

# ------------------------------------------------------------------ tests

# The runtimes share one set of helpers; only hooks/ differs.
for other in python bun; do
    if [[ -d $here/node/helpers && -d $here/$other/helpers ]]; then
        check "node and $other helpers are identical" diff -r "$here/node/helpers" "$here/$other/helpers"
    fi
done

for lang in "${langs[@]}"; do
    helpers=$here/$lang/helpers
    box=$work/$lang
    last_log=
    case $lang in
        python) entry=main.py ;;
        bun) entry=index.ts ;;
        *) entry=index.js ;;
    esac
    echo "# $lang"

    # --- script files (§5.3)
    for s in before-build build after-build before-start start server; do
        f=$helpers/$s.sh
        check "$lang: $s.sh is executable" test -x "$f"
        check "$lang: $s.sh starts with #!/bin/bash" test "$(head -n 1 "$f")" = '#!/bin/bash'
        check "$lang: $s.sh parses" bash -n "$f"
    done

    # --- build, default compression (gzip)
    sandbox "$box"
    fixture "$box/source" "$lang"
    # The install command records what it sees: cwd, cache variables, venv.
    install='pwd > build-cwd.txt; echo "$npm_config_cache" > cache-var.txt; echo "${VIRTUAL_ENV:-}" > venv-var.txt; mkdir -p "$npm_config_cache" && echo cached > "$npm_config_cache/marker"'
    log=$box/build-gzip.log
    run_build "$log" "$install"
    check "$lang: build succeeds" test $? -eq 0
    pkg=$box/code/code.tar.gz
    check "$lang: gzip (default) package is gzip" is_gzip "$pkg"
    for m in "Build cache miss." "Environment preparation started." "Environment preparation finished." \
        "Build command execution started." "Build command execution finished." \
        "Build packaging started." "Build packaging finished." "Build finished."; do
        check "$lang: build prints '$m'" has_progress "$log" "$m"
    done
    check "$lang: build prints 'Build cache saved.'" has_progress_prefix "$log" "Build cache saved."
    check "$lang: build messages in order" in_order "$log" "Build cache miss." \
        "Environment preparation started." "Environment preparation finished." \
        "Build command execution started." "Build command execution finished." \
        "Build packaging started." "Build packaging finished." "Build cache saved" "Build finished."
    check "$lang: install command ran in the build dir" has_line "$box/build/build-cwd.txt" "$box/build"
    check "$lang: npm_config_cache points under the cache root" \
        has_line "$box/build/cache-var.txt" "$box/cache-root/npm"
    check "$lang: cache artifact written" test -s "$box/cache-store/stores.sqfs"
    check "$lang: cache artifact is squashfs" is_squashfs "$box/cache-store/stores.sqfs"
    tar_list "$pkg" >"$box/list.txt"
    check "$lang: package holds the entrypoint" has_line "$box/list.txt" "./$entry"
    check "$lang: package holds dotfiles" has_line "$box/list.txt" "./.env.local"
    check "$lang: package holds nested files" has_line "$box/list.txt" "./lib/util.txt"
    check "$lang: package holds install output" has_line "$box/list.txt" "./build-cwd.txt"
    check "$lang: package excludes the old code.tar.gz" bash -c "! grep -q 'code.tar.gz' '$box/list.txt'"
    tar -xzf "$pkg" -C "$box" ./.open-runtimes
    check "$lang: .open-runtimes has three lines" test "$(wc -l <"$box/.open-runtimes")" -eq 3
    check "$lang: .open-runtimes entrypoint = default $entry" has_line "$box/.open-runtimes" "OPEN_RUNTIMES_ENTRYPOINT=$entry"
    check "$lang: .open-runtimes cleanup = none" has_line "$box/.open-runtimes" "OPEN_RUNTIMES_CLEANUP=none"
    check "$lang: .open-runtimes compression = gzip" has_line "$box/.open-runtimes" "OPEN_RUNTIMES_COMPRESSION=gzip"
    if [[ $lang == python ]]; then
        check "python: install command ran inside runtime-env" has_line "$box/build/venv-var.txt" "$box/build/runtime-env"
        check "python: package holds runtime-env" has_line "$box/list.txt" "./runtime-env/pyvenv.cfg"
        check "python: runtime-env has site-packages" bash -c "grep -qE '^\./runtime-env/lib/python3[^/]*/site-packages/$' '$box/list.txt'"
    fi

    # --- second build with the same artifact: cache hit, restored content
    rm -rf "$box/cache-root" "$box/build"
    log=$box/build-again.log
    run_build "$log" 'test -f "$npm_config_cache/marker"'
    check "$lang: second build succeeds with the cache restored" test $? -eq 0
    check "$lang: second build prints 'Build cache hit.'" has_progress "$log" "Build cache hit."

    # --- start from the gzip package
    export OPEN_RUNTIMES_ENTRYPOINT=not-the-build-entrypoint.js
    echo placeholder >"$box/server/src/function/placeholder"
    log=$box/start-gzip.log
    run_start "$log" "$fake_server"
    check "$lang: start exits with the server's status (0)" test $? -eq 0
    check "$lang: function dir filled" test -f "$box/server/src/function/$entry"
    check "$lang: function dir has .open-runtimes" test -f "$box/server/src/function/.open-runtimes"
    check "$lang: .open-runtimes entrypoint overrides the environment" has_line "$log" "ENTRY=$entry"
    check "$lang: .open-runtimes values exported" has_line "$log" "CLEANUP=none"
    for m in "Environment preparation started." "Environment preparation finished." "Runtime started."; do
        check "$lang: start prints '$m'" has_progress "$log" "$m"
    done
    check "$lang: server output passed through in order" in_order "$log" \
        "Runtime started." "booting" "HTTP server successfully started!" "ENTRY="
    t=$box/telemetry/timings.txt
    check "$lang: timings extract=" timing_line "$t" extract
    check "$lang: timings prepare=" timing_line "$t" prepare
    check "$lang: timings startup=" timing_line "$t" startup
    check "$lang: timings in order extract, prepare, startup" in_order "$t" extract= prepare= startup=
    if [[ $lang == python ]]; then
        check "python: start-prepare activates the function's runtime-env" \
            has_line "$log" "VENV=$box/server/src/function/runtime-env"
    fi
    unset OPEN_RUNTIMES_ENTRYPOINT

    # startup= also on the other banner form, and exit status passes through
    : >"$t"
    log=$box/start-alt.log
    run_start "$log" 'echo "listening: server started on http://0.0.0.0:3000"; exit 7'
    check "$lang: start exits with the server's status (7)" test $? -eq 7
    check "$lang: startup= on 'server started on http://'" timing_line "$t" startup
    : >"$t"
    run_start "$log" 'echo "no banner here"'
    check "$lang: no startup= without a banner" bash -c "! grep -q '^startup=' '$t'"

    # --- installed dependencies reused within one cache (lib.sh opr_deps_*)
    if [[ $lang == python ]]; then
        deps_dir=runtime-env deps_file=requirements.txt
    else
        deps_dir=node_modules deps_file=package.json
    fi
    sandbox "$box"
    fixture "$box/source" "$lang"
    echo "dep==1" >"$box/source/$deps_file"
    if [[ $lang == bun ]]; then
        # As in a real project: bun.lock always has a "workspaces" table,
        # which refers to no local files.
        printf '{\n  "lockfileVersion": 1,\n  "workspaces": {\n    "": {\n      "name": "fixture",\n    },\n  },\n  "packages": {}\n}\n' >"$box/source/bun.lock"
    fi
    # A stand-in install step: writes the dependency file into the folder
    # (the virtualenv for python) and counts its runs outside the build.
    deps_install='if [ "${OPR_DEPENDENCIES_REUSED:-}" = 1 ]; then echo "step skipped"; else d=${VIRTUAL_ENV:-$PWD/node_modules}; mkdir -p "$d/opr-test" && cp '"$deps_file"' "$d/opr-test/installed.txt" && echo run >>"$OPR_TEST_RUNS"; fi'
    export OPR_TEST_RUNS=$box/install-runs
    fresh_build() { # a new container: empty build folder and cache root
        rm -rf -- "$box/build" "$box/cache-root" "$box/x"
        run_build "$1" "$2"
    }
    unpacked() { # the package's copy of file $1
        rm -rf -- "$box/x" && mkdir -p "$box/x" && tar -xzf "$box/code/code.tar.gz" -C "$box/x" && cat -- "$box/x/$1"
    }
    log=$box/deps-1.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: first build succeeds" test $? -eq 0
    check "$lang/deps: first build has nothing to reuse" has_progress "$log" "Installed dependencies: none cached yet."
    check "$lang/deps: first build saves $deps_dir" has_progress_prefix "$log" "Installed dependencies: $deps_dir saved to the build cache."
    check "$lang/deps: saved after the install step, before packaging" in_order "$log" \
        "Build command execution finished." "Installed dependencies: $deps_dir saved" "Build packaging started." "Build cache saved"
    check "$lang/deps: package holds the installed files" test "$(unpacked "$deps_dir/opr-test/installed.txt")" = "dep==1"
    # Same inputs, edited code: the tree comes back, the step skips itself.
    echo "// edited" >>"$box/source/$entry"
    log=$box/deps-2.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: same inputs restore $deps_dir" has_progress "$log" \
        "Installed dependencies: $deps_dir restored from the build cache (inputs unchanged)."
    check "$lang/deps: restore happens before the install step" in_order "$log" \
        "Build cache hit." "Installed dependencies: $deps_dir restored" "Environment preparation finished." "step skipped"
    check "$lang/deps: install step ran once in two builds" test "$(wc -l <"$OPR_TEST_RUNS")" -eq 1
    check "$lang/deps: nothing saved when restored unchanged" bash -c "! grep -q 'Installed dependencies: $deps_dir saved' '$log'"
    check "$lang/deps: package holds the restored files" test "$(unpacked "$deps_dir/opr-test/installed.txt")" = "dep==1"
    check "$lang/deps: package holds the edited code" has_text "$box/x/$entry" "// edited"
    if [[ $lang == python ]]; then
        check "python/deps: restored virtualenv is kept and active" test -f "$box/x/runtime-env/pyvenv.cfg"
    fi
    # A changed dependency file: installed again, and the new tree replaces the old.
    echo "dep==2" >"$box/source/$deps_file"
    log=$box/deps-3.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: changed $deps_file is named and not reused" has_progress "$log" \
        "Installed dependencies: not reused, changed: $deps_file."
    check "$lang/deps: changed $deps_file runs the install step" test "$(wc -l <"$OPR_TEST_RUNS")" -eq 2
    check "$lang/deps: package holds the new install" test "$(unpacked "$deps_dir/opr-test/installed.txt")" = "dep==2"
    log=$box/deps-4.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: the new tree is reused next" test "$(unpacked "$deps_dir/opr-test/installed.txt")" = "dep==2"
    check "$lang/deps: ... without installing" test "$(wc -l <"$OPR_TEST_RUNS")" -eq 2
    # Another install command is another input.
    log=$box/deps-5.log
    fresh_build "$log" "$deps_install # other"
    check "$lang/deps: a changed command is not reused" has_progress "$log" "Installed dependencies: not reused, changed: command."
    # Another artifact (another cacheKey) never sees the tree.
    mv "$box/cache-store/stores.sqfs" "$box/stores-a.sqfs"
    log=$box/deps-6.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: another artifact has nothing to reuse" has_progress "$log" "Installed dependencies: none cached yet."
    mv -f "$box/stores-a.sqfs" "$box/cache-store/stores.sqfs"
    # Opt-out, local references and no cache at all.
    log=$box/deps-7.log
    OPR_BUILD_DEPENDENCY_REUSE=disabled fresh_build "$log" "$deps_install"
    check "$lang/deps: OPR_BUILD_DEPENDENCY_REUSE=disabled" has_progress "$log" \
        "Installed dependencies: reuse disabled (OPR_BUILD_DEPENDENCY_REUSE)."
    check "$lang/deps: ... installs" bash -c "! grep -q 'step skipped' '$log'"
    if [[ $lang == python ]]; then local_ref='-e ./lib'; else local_ref='{"dependencies": {"lib": "file:./lib"}}'; fi
    printf '%s\n' "$local_ref" >"$box/source/$deps_file"
    log=$box/deps-8.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: local references turn reuse off" has_progress "$log" \
        "Installed dependencies: not reused, $deps_file refers to local files."
    echo "dep==2" >"$box/source/$deps_file"
    rm -rf "$box/cache-store"
    log=$box/deps-9.log
    fresh_build "$log" "$deps_install"
    check "$lang/deps: without a cache folder the build succeeds" test $? -eq 0
    check "$lang/deps: ... and says nothing about reuse" bash -c "! grep -q 'Installed dependencies' '$log'"
    unset OPR_TEST_RUNS

    # The remaining builds skip the real build-prepare hook: for python it
    # creates a virtualenv with pip (seconds per build) and is covered above.
    export OPR_HOOKS_DIR=$work/$lang-hooks
    mkdir -p "$OPR_HOOKS_DIR"
    for h in "$here/$lang/hooks/"*.sh; do
        [[ $h == */build-prepare.sh ]] || cp "$h" "$OPR_HOOKS_DIR/"
    done

    # --- every compression method, then start from its package
    for comp in none zstd auto squashfs skip; do
        sandbox "$box"
        fixture "$box/source" "$lang"
        export OPEN_RUNTIMES_BUILD_COMPRESSION=$comp
        export OPEN_RUNTIMES_ENTRYPOINT=custom-$entry
        log=$box/build-$comp.log
        run_build "$log" ""
        check "$lang/$comp: build succeeds" test $? -eq 0
        expect=$comp
        [[ $comp == auto ]] && expect=none
        case $expect in
            none) check "$lang/$comp: code.tar.gz is a plain tar" is_plain_tar "$box/code/code.tar.gz" ;;
            gzip) check "$lang/$comp: code.tar.gz is gzip" is_gzip "$box/code/code.tar.gz" ;;
            zstd) check "$lang/$comp: code.tar.gz is zstd" is_zstd "$box/code/code.tar.gz" ;;
            squashfs)
                check "$lang/$comp: code.sqfs is squashfs" is_squashfs "$box/code/code.sqfs"
                check "$lang/$comp: no code.tar.gz written" test ! -e "$box/code/code.tar.gz"
                ;;
            skip)
                check "$lang/$comp: .extracted marker written" test -f "$box/code/.extracted"
                check "$lang/$comp: tree copied to the output dir" test -f "$box/code/.open-runtimes"
                check "$lang/$comp: no code.tar.gz written" test ! -e "$box/code/code.tar.gz"
                ;;
        esac
        if [[ $comp == skip ]]; then
            ortm=$box/code/.open-runtimes
        else
            rm -rf "$box/x" && mkdir "$box/x"
            if [[ $comp == squashfs ]]; then
                unsquashfs -f -no-xattrs -no-progress -d "$box/x" "$box/code/code.sqfs" >/dev/null
            else
                case $(magic "$box/code/code.tar.gz") in
                    28b52ffd) zstd -dcq "$box/code/code.tar.gz" | tar -xf - -C "$box/x" ;;
                    *) tar -xf "$box/code/code.tar.gz" -C "$box/x" ;;
                esac
            fi
            ortm=$box/x/.open-runtimes
        fi
        check "$lang/$comp: .open-runtimes compression = $expect" has_line "$ortm" "OPEN_RUNTIMES_COMPRESSION=$expect"
        check "$lang/$comp: .open-runtimes entrypoint = custom-$entry" has_line "$ortm" "OPEN_RUNTIMES_ENTRYPOINT=custom-$entry"

        unset OPEN_RUNTIMES_ENTRYPOINT
        echo placeholder >"$box/server/src/function/placeholder"
        log=$box/start-$comp.log
        run_start "$log" "$fake_server"
        check "$lang/$comp: start succeeds" test $? -eq 0
        check "$lang/$comp: entrypoint from .open-runtimes" has_line "$log" "ENTRY=custom-$entry"
        if [[ $comp == skip ]]; then
            check "$lang/$comp: entrypoint symlinked" test -L "$box/server/src/function/$entry"
            check "$lang/$comp: dotfile symlinked" test -L "$box/server/src/function/.env.local"
            check "$lang/$comp: placeholder removed" test ! -e "$box/server/src/function/placeholder"
            check "$lang/$comp: marker not linked" test ! -e "$box/server/src/function/.extracted"
            check "$lang/$comp: timings symlink=" timing_line "$box/telemetry/timings.txt" symlink
        else
            check "$lang/$comp: entrypoint extracted" test -f "$box/server/src/function/$entry"
            check "$lang/$comp: nested file extracted" test -f "$box/server/src/function/lib/util.txt"
            check "$lang/$comp: timings extract=" timing_line "$box/telemetry/timings.txt" extract
        fi
        check "$lang/$comp: timings startup=" timing_line "$box/telemetry/timings.txt" startup
    done
    unset OPEN_RUNTIMES_BUILD_COMPRESSION

    # --- auto at 5120 KiB and more chooses gzip
    sandbox "$box"
    fixture "$box/source" "$lang"
    head -c 6000000 /dev/urandom >"$box/source/big.bin"
    OPEN_RUNTIMES_BUILD_COMPRESSION=auto run_build "$box/build-auto-big.log" ""
    check "$lang/auto: >= 5120 KiB gives gzip" is_gzip "$box/code/code.tar.gz"

    # --- unknown compression falls back to gzip
    sandbox "$box"
    fixture "$box/source" "$lang"
    OPEN_RUNTIMES_BUILD_COMPRESSION=brotli run_build "$box/build-unknown.log" ""
    check "$lang: unknown compression gives gzip" is_gzip "$box/code/code.tar.gz"

    # --- the format is sniffed, never taken from the name: a zstd tar named code.gz
    sandbox "$box"
    fixture "$box/source" "$lang"
    printf 'OPEN_RUNTIMES_ENTRYPOINT=sniffed.js\n' >"$box/source/.open-runtimes"
    tar -C "$box/source" -cf - . | zstd -q -c >"$box/code/code.gz"
    run_start "$box/start-sniff.log" "$fake_server"
    check "$lang: zstd archive named code.gz is extracted" test -f "$box/server/src/function/$entry"
    check "$lang: its .open-runtimes loaded" has_line "$box/start-sniff.log" "ENTRY=sniffed.js"

    # --- preference order: code.sqfs before code.tar.gz
    sandbox "$box"
    mkdir -p "$box/a" "$box/b"
    echo sqfs >"$box/a/from-sqfs"
    echo targz >"$box/b/from-targz"
    mksquashfs "$box/a" "$box/code/code.sqfs" -noappend -no-progress >/dev/null 2>&1
    tar -C "$box/b" -czf "$box/code/code.tar.gz" .
    run_start "$box/start-order.log" "$fake_server"
    check "$lang: code.sqfs preferred over code.tar.gz" test -f "$box/server/src/function/from-sqfs"
    check "$lang: code.tar.gz not extracted then" test ! -e "$box/server/src/function/from-targz"

    # --- OPEN_RUNTIMES_OUTPUT_DIRECTORY
    sandbox "$box"
    fixture "$box/source" "$lang"
    export OPEN_RUNTIMES_OUTPUT_DIRECTORY=dist
    run_build "$box/build-outdir.log" 'mkdir -p dist && echo built > dist/page.html'
    check "$lang: output directory build succeeds" test $? -eq 0
    tar_list "$box/code/code.tar.gz" >"$box/list.txt"
    check "$lang: only the output directory packaged" has_line "$box/list.txt" "./page.html"
    check "$lang: output directory holds .open-runtimes" has_line "$box/list.txt" "./.open-runtimes"
    check "$lang: source outside it not packaged" bash -c "! grep -q '$entry' '$box/list.txt'"
    sandbox "$box"
    fixture "$box/source" "$lang"
    export OPEN_RUNTIMES_OUTPUT_DIRECTORY=missing
    log=$box/build-nooutput.log
    run_build "$log" ""
    check "$lang: missing output directory exits 1" test $? -eq 1
    check "$lang: prints the no-output error" has_progress "$log" \
        "Error: No build output found. Ensure your output directory isn't empty."
    unset OPEN_RUNTIMES_OUTPUT_DIRECTORY

    # --- failing install command fails the build
    sandbox "$box"
    fixture "$box/source" "$lang"
    log=$box/build-fail.log
    run_build "$log" "exit 5"
    check "$lang: failing install command fails the build" test $? -ne 0
    check "$lang: no package after a failed build" test ! -e "$box/code/code.tar.gz"

    # --- empty and missing source
    sandbox "$box"
    log=$box/build-empty.log
    run_build "$log" "touch should-not-run"
    check "$lang: empty source exits 1" test $? -eq 1
    check "$lang: prints the no-source error" has_progress "$log" \
        "Error: No source code found. Ensure your source isn't empty."
    check "$lang: install command not run on empty source" test ! -e "$box/build/should-not-run"
    rmdir "$box/source"
    run_build "$log" ""
    check "$lang: missing source exits 1" test $? -eq 1
    check "$lang: missing source prints the no-source error" has_progress "$log" \
        "Error: No source code found. Ensure your source isn't empty."

    # --- manifest (opt-in)
    sandbox "$box"
    fixture "$box/source" "$lang"
    OPEN_RUNTIMES_BUILD_MANIFEST=enabled run_build "$box/build-manifest.log" ""
    check "$lang: manifest is valid JSON listing the entrypoint" python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
assert m["version"] == 1
assert any(f["path"] == sys.argv[2] for f in m["files"])
' "$box/code/code.manifest.json" "$entry"

    # --- no package at all
    sandbox "$box"
    log=$box/start-none.log
    run_start "$log" 'echo server-ran'
    check "$lang: no archive exits 1" test $? -eq 1
    check "$lang: prints 'Code archive not found.'" has_text "$log" "Code archive not found."
    check "$lang: server not launched without a package" bash -c "! grep -q server-ran '$log'"

    # --- SIGTERM to start.sh reaches the server. Synchronised on the banner
    # read from start.sh's output, not on sleeps.
    sandbox "$box"
    fixture "$box/source" "$lang"
    tar -C "$box/source" -czf "$box/code/code.tar.gz" .
    mkfifo "$box/out"
    SECONDS=0
    bash "$helpers/start.sh" 'echo $$ > "$OPR_TELEMETRY_DIR/server.pid"; echo "HTTP server successfully started!"; exec sleep 30' \
        >"$box/out" 2>&1 &
    start_pid=$!
    exec 3<"$box/out"
    while IFS= read -r -u 3 line; do
        [[ $line == *"successfully started"* ]] && break
    done
    kill -TERM "$start_pid"
    wait "$start_pid"
    status=$?
    cat <&3 >/dev/null
    exec 3<&-
    server_pid=$(cat "$box/telemetry/server.pid")
    check "$lang: SIGTERM ends start.sh promptly" test "$SECONDS" -lt 10
    check "$lang: start.sh reports the server's signal status" test "$status" -eq 143
    check "$lang: server process terminated" bash -c "! kill -0 $server_pid 2>/dev/null"

    # --- server.sh
    sandbox "$box"
    out=$(OPEN_RUNTIMES_SERVER_COMMAND='echo "custom $OPR_SERVER_DIR"' bash "$helpers/server.sh" 2>&1)
    check "$lang: server.sh runs OPEN_RUNTIMES_SERVER_COMMAND" test "$out" = "custom $box/server"
    # Default command: opr-runtime from PATH with the moved paths.
    mkdir -p "$box/bin"
    printf '#!/bin/bash\necho "opr-runtime $*"\n' >"$box/bin/opr-runtime"
    chmod +x "$box/bin/opr-runtime"
    out=$(PATH=$box/bin:$PATH bash "$helpers/server.sh" 2>&1)
    check "$lang: server.sh default runs opr-runtime --language $lang" \
        test "$out" = "opr-runtime --language $lang --server-dir $box/server --function-dir $box/server/src/function --logs-dir $box/logs --timings-file $box/telemetry/timings.txt"
    unset OPR_HOOKS_DIR
done

echo "$passed passed, $failed failed"
((failed == 0))
