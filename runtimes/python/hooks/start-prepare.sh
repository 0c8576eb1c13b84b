# shellcheck shell=bash
# start-prepare (runtime-protocol §5.8), sourced in the server root. The
# worker finds the packaged site-packages itself; activating the function's
# virtualenv here also gives subprocesses of the user's code its `python`
# and `pip`. bin/activate is not used: it names the build directory the
# venv was created in.
if [[ -d $OPR_FUNCTION_DIR/runtime-env/bin ]]; then
    export VIRTUAL_ENV=$OPR_FUNCTION_DIR/runtime-env
    export PATH=$VIRTUAL_ENV/bin:$PATH
fi
