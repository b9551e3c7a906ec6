#!/usr/bin/env bash
# Installs what vswitch needs to build, run and test, idempotently:
# Debian packages, pnpm (pinned), node dependencies, then builds everything.
# Needs root for apt-get (the daemon and the tests need root anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
# busybox-static, not busybox: the two conflict, and the QEMU test builds its guest's
# initramfs from the static one. qemu-system-x86 + linux-image-cloud-amd64: the real-VM test.
APT_PACKAGES=(iproute2 curl tcpdump python3-scapy busybox-static iperf3 socat ethtool util-linux procps make g++ python3 prometheus isc-dhcp-client dhcpcd-base dnsmasq-base qemu-system-x86 linux-image-cloud-amd64)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root so they can be installed)" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  echo "setup: installing pnpm@$PNPM_VERSION"
  npm install -g "pnpm@$PNPM_VERSION" >/dev/null 2>&1
fi

# node-gyp under pnpm downloads Node headers unless told where they are.
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
pnpm install --frozen-lockfile --reporter=append-only | grep -v '^Progress' || true
test -d node_modules/.pnpm || { echo "setup: pnpm install failed" >&2; exit 1; }
pnpm build
