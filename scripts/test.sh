#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs the Debian packages the tests
# need (when missing and when running as root), checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# libssl-dev, pkg-config: webauthn-rs links OpenSSL. chromium: the web end-to-end test.
for pkg in passwd libssl-dev pkg-config chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them first)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

# playwright-core drives Chromium in the web end-to-end test (tests/e2e, locked versions).
if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
