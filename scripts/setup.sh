#!/bin/bash
# Installs the Debian 12 packages that opr and its tests use on the host.
# Idempotent: when everything is installed it only runs dpkg-query (fast).
#
#   ./scripts/setup.sh
#
# Needs root (or sudo) only when something is missing. Rust, Node and Python
# are not installed here (see README.md).
set -euo pipefail

packages=(bubblewrap zstd squashfs-tools unzip util-linux bsdutils git
    python3-venv python3-pip curl)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done
((${#missing[@]})) || exit 0

echo "setup.sh: installing ${missing[*]}" >&2
sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
