# shellcheck shell=bash
# pack (runtime-protocol §5.8), sourced from the server folder: a package
# needs the installed libraries, not the installer. Drop the pip shims (or a
# venv's own pip, ~10 MB) so cold starts unpack only what the function uses.
for opr_site in "$OPR_BUILD_DIR"/runtime-env/lib/python3*/site-packages; do
    [[ -d $opr_site ]] || continue
    rm -rf "$opr_site"/pip "$opr_site"/pip-*.dist-info
done
rm -f "$OPR_BUILD_DIR"/runtime-env/bin/pip "$OPR_BUILD_DIR"/runtime-env/bin/pip3*
unset opr_site
