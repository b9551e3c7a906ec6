#!/usr/bin/env bash
# npm run demo [-- --duration SECONDS]: installs and builds what is needed, then
# runs the demo lab (scripts/lab.sh) on its config, scripts/lab.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: must run as root (it creates TAP devices and network namespaces)" >&2; exit 1; }
bash scripts/setup.sh
exec bash scripts/lab.sh "$@"
