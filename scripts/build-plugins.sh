#!/usr/bin/env bash
# Builds the example plugins (and the test plugins in tests/plugins) for wasm32-unknown-unknown into target/wasm32-unknown-unknown/plugin/.
set -euo pipefail
cd "$(dirname "$0")/.."
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
ls target/wasm32-unknown-unknown/plugin/*.wasm
