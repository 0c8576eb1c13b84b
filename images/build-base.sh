#!/bin/bash
# The root filesystem of opr/base:bookworm, the image every opr runtime
# image starts FROM (docs/docker.md). No registry can be pulled from, so the
# base comes from debootstrap: Debian 12 "minbase" (essential packages and
# apt), written as a tarball that `docker import` turns into an image.
#
#   images/build-base.sh OUT.tar                 # make OUT.tar unless it exists
#   images/build-base.sh OUT.tar --import NAME   # ... then `docker import` it as NAME
#
# OUT.tar is a cache: when it exists nothing is downloaded again (delete it to
# refresh the base). `opr images build` runs this script for the tarball and
# imports it through the Engine API itself.
#
# Needs root and debootstrap (apt-get install -y debootstrap). The mirror is
# $OPR_DEBIAN_MIRROR, default http://deb.debian.org/debian.
set -euo pipefail

usage() { echo "usage: $0 OUT.tar [--import NAME]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
out=$1
shift
import=
if [[ $# -gt 0 ]]; then
    [[ $# -eq 2 && $1 == --import ]] || usage
    import=$2
fi
mirror=${OPR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${OPR_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if [[ -s $out ]]; then
    echo "build-base: using cached $out" >&2
else
    if ! command -v debootstrap >/dev/null; then
        echo "build-base: debootstrap is not installed: apt-get install -y debootstrap" >&2
        exit 1
    fi
    if ((EUID != 0)); then
        echo "build-base: debootstrap needs root" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$out")"
    root=$(mktemp -d "$out.rootfs.XXXXXX")
    trap 'rm -rf "$root" "$out.partial"' EXIT
    echo "build-base: debootstrap --variant=minbase bookworm ($mirror)" >&2
    debootstrap --variant=minbase bookworm "$root" "$mirror" >&2
    # Updates and security fixes for whatever the runtime images install.
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
    # Keep images small: no recommends, no downloaded .debs kept, no
    # translations, docs or man pages.
    cat >"$root/etc/apt/apt.conf.d/90opr" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Keep-Downloaded-Packages "false";
Acquire::Languages "none";
EOF
    # An image layer is written once: dpkg need not fsync every file (the
    # Node image installs ~400 packages; this saves minutes).
    echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/90opr-unsafe-io"
    cat >"$root/etc/dpkg/dpkg.cfg.d/90opr" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    tar --numeric-owner --xattrs -C "$root" -cf "$out.partial" .
    mv "$out.partial" "$out"
    echo "build-base: wrote $out ($(du -h "$out" | cut -f1))" >&2
fi

if [[ -n $import ]]; then
    docker import --change 'CMD ["bash"]' "$out" "$import" >&2
    echo "build-base: imported $import" >&2
fi
