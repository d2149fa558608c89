#!/usr/bin/env bash
# Builds the Debian package target/debian/tapd_<version>-1_<arch>.deb with cargo-deb (the
# metadata is [package.metadata.deb] in Cargo.toml): builds both binaries, generates the man
# pages and shell completions into target/assets with the hidden `tapd generate-docs`, then
# packages without building again. Prints the path of the .deb on its last line.
#
#   scripts/build-deb.sh                  # release profile
#   TAPD_DEB_PROFILE=NAME scripts/build-deb.sh   # another Cargo profile
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${TAPD_DEB_PROFILE:-release}
if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is missing; installing it from crates.io" >&2
  cargo install cargo-deb --locked
fi

cargo build --locked --profile "$profile" --bins >&2
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
rm -rf target/assets
"$target_dir/$profile/tapd" generate-docs target/assets >/dev/null

mkdir -p target/debian
deb=$(cargo deb --no-build --locked --profile "$profile" --output target/debian)
echo "$deb"
