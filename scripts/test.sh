#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs the Debian packages the tests
# need (when missing and when running as root), checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# slapd + ldap-utils: the throwaway OpenLDAP server of tests/ldap (and the LDAP benchmark).
for pkg in passwd slapd ldap-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them first)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Keep apt from starting the services it installs (slapd): the tests run their own.
  # An existing policy-rc.d (a container image's) is left as it is.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
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

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
