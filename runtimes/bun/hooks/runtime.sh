# shellcheck shell=bash disable=SC2034 # read by helpers/lib.sh
# Sourced by helpers/lib.sh: which runtime these helpers serve.
# (Not a lifecycle hook of runtime-protocol §5.8; the helpers themselves are
# the same for every language.) Bun serves functions with the Node worker;
# its entrypoint defaults to TypeScript, as in Open Runtimes' Bun runtime.
OPR_RUNTIME_LANGUAGE=bun
OPR_DEFAULT_ENTRYPOINT=index.ts

# Installed dependencies (reused across builds of one cacheKey, lib.sh): the
# folder `bun install` fills, the files that decide its content (Bun reads
# npm's and yarn's lockfiles too when it has none of its own), and what in
# them points at local files (not covered by the inputs).
OPR_DEPENDENCY_DIR=node_modules
OPR_DEPENDENCY_FILES=(package.json bun.lock bun.lockb bunfig.toml package-lock.json
    yarn.lock pnpm-lock.yaml .npmrc)
OPR_DEPENDENCY_LOCAL_PATTERN='"(file|link|portal|workspace):|"workspaces"[[:space:]]*:'
# Where to look for them: not in Bun's own lockfiles (bun.lock always has a
# "workspaces" table; bun.lockb is binary). Every local package is declared
# in package.json, which is looked at.
OPR_DEPENDENCY_LOCAL_FILES=(package.json package-lock.json npm-shrinkwrap.json
    yarn.lock pnpm-lock.yaml .npmrc)
# Bun is its own package manager: its version is the whole toolchain.
opr_toolchain_version() {
    local v
    if v=$(bun --version 2>/dev/null); then
        echo "bun $v"
    else
        echo "bun absent"
    fi
}
