# shellcheck shell=bash
# build-prepare (runtime-protocol §5.8), sourced in the build directory:
# create the virtualenv runtime-env and activate it, so that
# `pip install -r requirements.txt` installs into the package. The Python
# worker adds runtime-env/lib/python3*/site-packages to sys.path when it
# first loads the function.

# The interpreter the server runs workers with (opr-runtime's default), so
# the venv's python3.X directory matches it. Outside an image, fall back to
# whatever python3 is on PATH.
opr_python=/usr/bin/python3
[[ -x $opr_python ]] || opr_python=python3

if [[ ${OPR_DEPENDENCIES_REUSED:-} == 1 && -f runtime-env/pyvenv.cfg && -x runtime-env/bin/python ]]; then
    # Restored from the build cache with the same inputs (helpers/lib.sh,
    # opr_deps_restore): the virtualenv made by that build, pip shims too.
    :
elif "$opr_python" -m pip --version >/dev/null 2>&1; then
    # No pip inside the package: `pip` is a shim that drives the system's
    # pip against this venv (pip >= 22.3 `--python`). A venv with pip is
    # ~10 MB and hundreds of files that every cold start would unpack.
    "$opr_python" -m venv --without-pip runtime-env || return 1
    for opr_shim in pip pip3; do
        printf '#!/bin/sh\nexec %s -m pip --python "%s" "$@"\n' \
            "$opr_python" "$PWD/runtime-env/bin/python" >"runtime-env/bin/$opr_shim"
        chmod +x "runtime-env/bin/$opr_shim"
    done
    unset opr_shim
else
    "$opr_python" -m venv runtime-env || return 1
fi
# shellcheck source=/dev/null
source runtime-env/bin/activate || return 1
