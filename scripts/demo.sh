#!/usr/bin/env bash
# The demo: builds the example plugins and the host, serves the example
# campaigns on SQLite, feeds simulated Twitch traffic, shows grants and manifests.
# Extra arguments go to `drops-host demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh >/dev/null
cargo run --quiet -p drops-host -- demo --plugins "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/plugin" "$@"
