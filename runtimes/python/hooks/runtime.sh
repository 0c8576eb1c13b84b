# shellcheck shell=bash disable=SC2034 # read by helpers/lib.sh
# Sourced by helpers/lib.sh: which runtime these helpers serve.
# (Not a lifecycle hook of runtime-protocol §5.8; the helpers themselves are
# the same for every language.)
OPR_RUNTIME_LANGUAGE=python
OPR_DEFAULT_ENTRYPOINT=main.py
