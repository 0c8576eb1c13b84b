#!/bin/bash
# Installs the Debian 12 packages that opr and its tests use on the host,
# and Bun (from the npm registry) for the bun runtime.
# Idempotent: when everything is installed it only runs dpkg-query (fast).
#
#   ./scripts/setup.sh
#
# Needs root (or sudo) only when something is missing. Rust, Node and Python
# are not installed here (see README.md); Bun is, through npm.
set -euo pipefail

packages=(bubblewrap zstd squashfs-tools unzip util-linux bsdutils git
    python3-venv python3-pip curl)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done
bun_missing=
command -v bun >/dev/null || bun_missing=1
((${#missing[@]})) || [[ -n $bun_missing ]] || exit 0

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install ${missing[*]} ${bun_missing:+bun}" >&2; exit 1; }
    sudo=(sudo)
fi

if ((${#missing[@]})); then
    echo "setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Bun, for the bun runtime (runtimes/bun): the npm package carries the
# binary. Its postinstall script puts the binary in place of a placeholder;
# where npm skipped the script, it is run here. The npm registry is reached
# with the system's certificates, not NODE_EXTRA_CA_CERTS.
if [[ -n $bun_missing ]]; then
    command -v npm >/dev/null || { echo "setup.sh: npm is needed to install bun" >&2; exit 1; }
    echo "setup.sh: installing bun (npm install -g bun)" >&2
    "${sudo[@]}" env -u NODE_EXTRA_CA_CERTS npm install -g --no-audit --no-fund bun
    if ! bun --version >/dev/null 2>&1; then
        bun_pkg=$(npm root -g)/bun
        (cd "$bun_pkg" && "${sudo[@]}" env -u NODE_EXTRA_CA_CERTS node install.js)
    fi
    bun --version >/dev/null || { echo "setup.sh: bun is installed but does not run" >&2; exit 1; }
fi
