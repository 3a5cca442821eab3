#!/usr/bin/env bash
# Hot reload latency of the tiers rule written in Rust and in TypeScript
# (docs/BENCHMARKS.md section 12): a new version of the plugin renamed into
# the rules folder of a running release host, timed until GET /v1/campaigns
# reports its hash; the host's own "rules reloaded in" figure beside it.
# Usage: benches/reload.sh [swaps=5]
set -euo pipefail
cd "$(dirname "$0")/.."
swaps=${1:-5}
. benches/common.sh
bench_setup reload
install_plugin watch_time_tiers
install_plugin watch_time_tiers_ts
cp examples/rules/campaigns/summer-boss-rush.toml "$work/rules/campaigns/"
sed 's/5f0c7a2e-summer-boss-rush/5f0c7a2e-rust-twin/; s/plugin = "watch-time-tiers-ts"/plugin = "watch-time-tiers"/' \
  examples/rules/campaigns/summer-boss-rush.toml > "$work/rules/campaigns/rust-twin.toml"
write_config full
start_host
for plugin in watch-time-tiers watch-time-tiers-ts; do
  orig="$work/rules/plugins/$plugin.wasm"
  echo "== $plugin ($(stat -c %s "$orig") bytes): $swaps swaps"
  time_swaps "$orig" "$swaps"
  grep -o 'rules reloaded in [0-9.]* ms' "$work/host.log" | tail -"$swaps" | tr '\n' ' '; echo
done
