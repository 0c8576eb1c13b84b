# shellcheck shell=bash disable=SC2034 # read by helpers/lib.sh
# Sourced by helpers/lib.sh: which runtime these helpers serve.
# (Not a lifecycle hook of runtime-protocol §5.8; the helpers themselves are
# the same for every language.)
OPR_RUNTIME_LANGUAGE=node
OPR_DEFAULT_ENTRYPOINT=index.js

# Installed dependencies (reused across builds of one cacheKey, lib.sh): the
# folder the install step fills, the files that decide its content, and what
# in them points at local files (not covered by the inputs).
OPR_DEPENDENCY_DIR=node_modules
OPR_DEPENDENCY_FILES=(package.json package-lock.json npm-shrinkwrap.json yarn.lock
    pnpm-lock.yaml bun.lockb .npmrc .yarnrc .yarnrc.yml)
OPR_DEPENDENCY_LOCAL_PATTERN='"(file|link|portal|workspace):|"workspaces"[[:space:]]*:'
# Node's and npm's versions (npm's read from its package.json: running npm
# costs a quarter of a second).
opr_toolchain_version() {
    local npm_pkg
    node --version 2>/dev/null || echo "node absent"
    npm_pkg=$(readlink -f -- "$(command -v npm 2>/dev/null)" 2>/dev/null)
    npm_pkg=${npm_pkg%/bin/*}/package.json
    if [[ -f $npm_pkg ]]; then
        grep -m1 -E '^[[:space:]]*"version"' "$npm_pkg" | tr -d ' ,"'
    else
        echo "npm absent"
    fi
}
