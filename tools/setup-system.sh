#!/usr/bin/env bash
# setup-system.sh -- install the system packages bas builds against (PMDK, zlib headers).
# Root installs them with apt-get; anyone else gets told exactly what to install.
set -euo pipefail

PACKAGES=(libpmemobj-dev libpmem-dev zlib1g-dev)
have_headers() { [[ -f /usr/include/libpmemobj.h && -f /usr/include/zlib.h ]]; }

if have_headers; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: PMDK and zlib headers are missing and this is not a Debian/Ubuntu system." >&2
    echo "setup: install libpmemobj (PMDK >= 1.12) and zlib development files, then rerun." >&2
    echo "setup: or build without the pmem:// backend: BAS_NO_PMEM=1 make setup" >&2
    exit 1
fi
if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "setup: missing system packages: ${PACKAGES[*]}" >&2
    echo "setup: you are not root; run this once, then rerun make:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${PACKAGES[*]}" >&2
    exit 1
fi
echo "setup: installing ${PACKAGES[*]} with apt-get"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
have_headers || { echo "setup: apt-get ran but the headers are still missing" >&2; exit 1; }
