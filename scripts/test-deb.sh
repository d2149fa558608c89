#!/usr/bin/env bash
# Builds the .deb, installs it with dpkg on this machine, checks what it installed, then
# removes and purges it. Needs root (CI runs as root). Called by scripts/test.sh.
#
# Debian container images often keep man pages out with a dpkg `path-exclude` for
# /usr/share/man (in /etc/dpkg/dpkg.cfg.d/). The install below passes
# --path-include=/usr/share/man/* so tapd's pages are installed on such machines too.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test-deb.sh installs a package: run it as root" >&2
  exit 1
fi
pass=0
fail=0
check() {
  local what=$1
  shift
  if "$@" >/tmp/tapd-test-deb.out 2>&1; then
    pass=$((pass + 1))
    echo "ok   - $what"
  else
    fail=$((fail + 1))
    echo "FAIL - $what"
    sed 's/^/       /' /tmp/tapd-test-deb.out
  fi
}
refute() { ! "$@"; }

# Leftovers of an earlier run would hide problems.
if dpkg-query -W -f='${Status}' tapd 2>/dev/null | grep -q 'installed\|config-files'; then
  dpkg --purge tapd >/dev/null
fi

deb=$(scripts/build-deb.sh | tail -n 1)
echo "built $deb"

check "dpkg -i installs the package" \
  dpkg --path-include='/usr/share/man/*' -i "$deb"
check "tapd and tapctl are on the PATH" \
  sh -c 'tapd --version && tapctl --version'
check "the shipped /etc/tapd/tapd.toml passes check-config" \
  tapd check-config --config /etc/tapd/tapd.toml
check "/etc/tapd/tapd.toml is a conffile" \
  sh -c 'dpkg-query -W -f="\${Conffiles}" tapd | grep -q "/etc/tapd/tapd.toml"'
check "man -w tapd" man -w tapd
check "man -w tapctl" man -w tapctl
check "man -w 5 tapd.toml" man -w 5 tapd.toml
check "man -w tapctl-tap-create" man -w tapctl-tap-create
check "completions for bash, zsh and fish" \
  test -s /usr/share/bash-completion/completions/tapctl \
    -a -s /usr/share/zsh/vendor-completions/_tapctl \
    -a -s /usr/share/fish/vendor_completions.d/tapctl.fish \
    -a -s /usr/share/bash-completion/completions/tapd
check "user tapd and group tapd-admins exist, tapd is a member" \
  sh -c 'getent passwd tapd && getent group tapd-admins | grep -qw tapd'
check "/var/lib/tapd is 0750 tapd:tapd" \
  sh -c '[ "$(stat -c %a:%U:%G /var/lib/tapd)" = "750:tapd:tapd" ]'
check "unit, sysusers and tmpfiles snippets are installed" \
  test -s /lib/systemd/system/tapd.service \
    -a -s /usr/lib/sysusers.d/tapd.conf -a -s /usr/lib/tmpfiles.d/tapd.conf
check "systemd-analyze verify accepts the installed unit" \
  sh -c 'out=$(systemd-analyze verify /lib/systemd/system/tapd.service 2>&1); echo "$out"; ! echo "$out" | grep -q "tapd.service:"'
check "tapd check-config as the tapd user" \
  setpriv --reuid=tapd --regid=tapd --init-groups tapd check-config --config /etc/tapd/tapd.toml

check "dpkg -r removes the package" dpkg -r tapd
check "binaries are gone" refute test -e /usr/bin/tapd -o -e /usr/bin/tapctl
check "the conffile stays until purge" test -f /etc/tapd/tapd.toml
check "dpkg --purge purges it" dpkg --purge tapd
check "conffile and state are gone" \
  refute test -e /etc/tapd/tapd.toml -o -e /var/lib/tapd
check "dpkg no longer knows tapd" \
  refute sh -c 'dpkg-query -W -f="\${Status}" tapd 2>/dev/null | grep -q "installed\|config-files"'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
