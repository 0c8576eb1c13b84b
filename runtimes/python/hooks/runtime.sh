# shellcheck shell=bash disable=SC2034 # read by helpers/lib.sh
# Sourced by helpers/lib.sh: which runtime these helpers serve.
# (Not a lifecycle hook of runtime-protocol §5.8; the helpers themselves are
# the same for every language.)
OPR_RUNTIME_LANGUAGE=python
OPR_DEFAULT_ENTRYPOINT=main.py

# Installed dependencies (reused across builds of one cacheKey, lib.sh): the
# virtualenv build-prepare creates, the file that decides its content, and
# requirement lines that point at local files or other requirement files
# (not covered by the inputs).
OPR_DEPENDENCY_DIR=runtime-env
OPR_DEPENDENCY_FILES=(requirements.txt)
OPR_DEPENDENCY_LOCAL_PATTERN='^[[:space:]]*(-e|--editable|-r|--requirement|-c|--constraint|\.|/|~|file:|(-f|--find-links)[=[:space:]]*[./~])|@[[:space:]]*file:'
# The interpreter the virtualenv is made from (build-prepare.sh).
opr_toolchain_version() {
    local py=/usr/bin/python3
    [[ -x $py ]] || py=python3
    "$py" -VV 2>/dev/null || echo "python absent"
}
