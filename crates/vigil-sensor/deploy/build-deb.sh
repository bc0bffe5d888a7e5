#!/usr/bin/env bash
# Builds the vigil-sensor Debian package (release build) with cargo-deb,
# installing cargo-deb first if it is missing. Prints the .deb's path.
# Extra arguments go to `cargo deb` (e.g. --fast, --deb-revision 2).
set -euo pipefail
cd "$(dirname "$0")/../../.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb (about 2 minutes on 2 cores)" >&2
  cargo install cargo-deb --locked
fi
cargo deb --locked -p vigil-sensor "$@"
