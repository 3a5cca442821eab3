#!/usr/bin/env bash
# Builds the example plugins: the Rust ones (and the test plugins in
# tests/plugins) for wasm32-unknown-unknown, and the TypeScript ones in
# plugins-ts/ with the AssemblyScript compiler pinned in package-lock.json
# (installed with `npm ci`). All land in $CARGO_TARGET_DIR (default target/)
# under wasm32-unknown-unknown/plugin/ (the TypeScript examples are NAME-ts: NAME_ts.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if ! rustc --print sysroot >/dev/null 2>&1 || [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
  if [ -x ../shared/toolchain/install-wasm-target.sh ] || [ -f ../shared/toolchain/install-wasm-target.sh ]; then
    bash ../shared/toolchain/install-wasm-target.sh wasm32-unknown-unknown
  else
    rustup target add wasm32-unknown-unknown
  fi
fi
plugins=()
for dir in plugins/*/ tests/plugins/*/; do plugins+=(-p "$(basename "$dir")"); done
cargo build --quiet --profile plugin --target wasm32-unknown-unknown "${plugins[@]}"

# TypeScript rules: `npm ci` when node_modules was not installed from this lockfile.
stamp="node_modules/.installed-from-lock.sha256"
if [ "$(sha256sum < package-lock.json)" != "$(cat "$stamp" 2>/dev/null)" ]; then
  if ! command -v npm >/dev/null; then
    echo "npm is needed for the TypeScript rules in plugins-ts/ (Node.js 20 or newer)" >&2
    exit 1
  fi
  npm ci --no-audit --no-fund --loglevel=error >&2
  sha256sum < package-lock.json > "$stamp"
fi
npm run --silent build >&2
for wasm in plugins-ts/*/build/*.wasm; do
  name="$(basename "$wasm")"
  cp "$wasm" "$target/wasm32-unknown-unknown/plugin/${name//-/_}"
done
ls "$target"/wasm32-unknown-unknown/plugin/*.wasm
