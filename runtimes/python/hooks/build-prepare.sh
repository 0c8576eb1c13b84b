# shellcheck shell=bash
# build-prepare (runtime-protocol §5.8), sourced in the build directory:
# create the virtualenv runtime-env and activate it, so that
# `pip install -r requirements.txt` installs into the package. The Python
# worker adds runtime-env/lib/python3*/site-packages to sys.path at start.

# The interpreter the server runs workers with (opr-runtime's default), so
# the venv's python3.X directory matches it. Outside an image, fall back to
# whatever python3 is on PATH.
opr_python=/usr/bin/python3
[[ -x $opr_python ]] || opr_python=python3

"$opr_python" -m venv runtime-env || return 1
# shellcheck source=/dev/null
source runtime-env/bin/activate || return 1
