#!/usr/bin/env bash
# The test command (npm test): installs what is needed, builds, runs every test
# (unit and integration), and ends with one line "N passed, M failed".
# Integration tests need root (network namespaces, TAP devices): not root is an error, not a skip.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test: must run as root: the integration tests create network namespaces, TAPs and veths" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

results=$(mktemp /tmp/vswitch-results.XXXXXX.json)
trap 'rm -f "$results"' EXIT
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@"
code=$?
node -e '
  const fs = require("fs");
  let r = {};
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch {}
  const passed = r.numPassedTests ?? 0;
  let failed = r.numFailedTests ?? 0;
  if (process.argv[2] !== "0" && failed === 0) failed = 1; // a suite that failed to load counts as a failure
  console.log(`${passed} passed, ${failed} failed`);
' "$results" "$code"
exit $code
