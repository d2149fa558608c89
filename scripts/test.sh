#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs the Debian packages the tests
# need (when missing and when running as root), checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# passwd: useradd/groupadd/usermod, for the local accounts the integration tests act as.
# freeradius-utils: radclient, the real RADIUS client of tests/radius; curl: the federation tests.
# systemd: systemd-analyze for the unit checks; man-db: `man -w` after installing the .deb.
# postgresql (+ openssl for test certificates): the throwaway clusters of the store
# conformance suite and tests/postgres_nodes/.
# libssl-dev, pkg-config: webauthn-rs links OpenSSL. chromium: the web end-to-end test.
# slapd + ldap-utils: the throwaway OpenLDAP server of tests/ldap (and the LDAP benchmark).
# sqlite3 (and psql, which postgresql brings): the audit-chain tests edit the stores as an
# attacker would.
# python3-aiosmtpd: the SMTP server tests/onboarding.rs mails TAPs to.
for pkg in passwd slapd ldap-utils freeradius-utils curl systemd man-db postgresql openssl libssl-dev pkg-config chromium python3-aiosmtpd sqlite3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them first)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Installing must not start the packages' own services (PostgreSQL's main cluster…):
  # tests start their own servers on private ports.
  # An existing policy-rc.d (a container image's) is left as it is.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap 'if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  created_policy=""
  trap - EXIT
fi

# playwright-core drives Chromium in the web end-to-end test (tests/e2e, locked versions).
if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Supply chain (deny.toml): licences, banned/duplicate crates, sources. The advisory check
# needs the RustSec database from the network: see README "Supply chain".
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi
cargo deny --locked check --hide-inclusion-graph licenses bans sources
cargo test --locked --all-targets

# The Debian package: build, dpkg -i, check, remove, purge (root only; CI is root).
scripts/test-deb.sh
