#!/usr/bin/env bash
# Installs what vswitch needs to build, run and test, idempotently:
# Debian packages, pnpm (pinned), node dependencies, then builds everything and
# installs the shell completion (bash, zsh) and the vswitch(8) man page, generated
# from the build (scripts/install.sh --docs-only).
# Needs root for apt-get (the daemon and the tests need root anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
# busybox-static, not busybox: the two conflict, and the QEMU test builds its guest's
# initramfs from the static one. qemu-system-x86 + linux-image-cloud-amd64: the real-VM test.
# bash-completion, zsh, man-db, groff-base: the completion and man page setup installs (and
# their tests: man -l renders the page); strace: the test that the systemd unit's
# RestrictAddressFamilies covers every socket the daemon opens.
# openvswitch-switch: the bond (LACP) and VXLAN interop tests run a private ovs-vswitchd
# (userspace datapath) as the peer.
# frr, gobgpd, golang-github-osrg-gobgp-dev: EVPN (the daemon's managed gobgpd, the GoBGP API's
# .proto files it loads at run time, FRR as the peer in test/evpn.test.ts; no frr service is used).
APT_PACKAGES=(iproute2 curl tcpdump python3-scapy busybox-static iperf3 socat ethtool util-linux procps make g++ python3 prometheus isc-dhcp-client dhcpcd-base dnsmasq-base ndisc6 qemu-system-x86 linux-image-cloud-amd64 bash-completion zsh man-db groff-base strace frr gobgpd golang-github-osrg-gobgp-dev openvswitch-switch)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# systemd-analyze checks the unit (test/service.test.ts). The systemd package only when the
# command is missing and systemd is not the running init (a container): there it installs
# files and starts nothing. On a host that runs systemd it is installed already.
if ! command -v systemd-analyze >/dev/null 2>&1 && [ ! -d /run/systemd/system ]; then missing+=(systemd); fi
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
bash scripts/install.sh --docs-only
