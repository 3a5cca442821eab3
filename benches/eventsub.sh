#!/usr/bin/env bash
# Today's Drops end to end (docs/BENCHMARKS.md, section 10): `drops-host
# simulate` sends ENTITLED viewers' entitlements as signed EventSub
# notifications of PER_MESSAGE entitlements to a release host on SQLite; the
# `benefit-to-items` rule decides each, the items go to the Twitch stand-in's
# studio webhook and FULFILLED to its Helix (both real local HTTP servers).
# Prints the acknowledgement rate of the notifications and the time from the
# first notification until every entitlement is FULFILLED.
#
#   benches/eventsub.sh [ENTITLED=20000] [PER_MESSAGE=100]
set -euo pipefail
cd "$(dirname "$0")/.."
entitled=${1:-20000} per_message=${2:-100}
. benches/common.sh
bench_setup eventsub
install_plugin benefit_to_items
sed 's/^daily_cap = 3 /daily_cap = 1000/' examples/rules/campaigns/launch-drops.toml > "$work/rules/campaigns/launch-drops.toml"
stand_in_out="$work/stand-in.out"
"$bin" twitch-stand-in > "$stand_in_out" 2>&1 &
stand_in=$!
for _ in $(seq 1 100); do grep -q listening "$stand_in_out" && break; sleep 0.1; done
twitch=$(sed -n 's/twitch stand-in listening on //p' "$stand_in_out")
write_config normal
cat >> "$work/drops-host.toml" <<TOML
[eventsub]
secret = "bench-eventsub-secret"
reconcile_interval_secs = 0
[twitch]
client_id = "bench-client"
client_secret = "bench-secret"
auth_base_url = "http://$twitch"
api_base_url = "http://$twitch"
[sink.webhook]
url = "http://$twitch/webhook"
secret = "stand-in-webhook-secret"
max_batch = 500
TOML
start_host
trap 'kill -9 $host $stand_in 2>/dev/null; wait $host 2>/dev/null || true; rm -rf "$work"' EXIT
t0=$(date +%s.%N)
"$bin" simulate --target "$url" --channels 0 --minutes 0 --eventsub-secret bench-eventsub-secret \
  --admin-token bench-token-0123456 --entitled-viewers "$entitled" --entitlements-per-message "$per_message" \
  --verbose false | grep EventSub
t1=$(date +%s.%N)
while :; do
  pending=$(metric drops_entitlements_to_deliver); fulfil=$(metric drops_entitlements_to_fulfil)
  waiting=$(metric drops_entitlements_awaiting_link)
  decided=$(curl -s "$url/metrics" | awk '$1 ~ /^drops_entitlements_decided_total/ {s += $2} END {print s+0}')
  fulfilled=$(curl -s "$url/metrics" | awk '$1 ~ /^drops_fulfil_answers_total/ {s += $2} END {print s+0}')
  refused=$(curl -s "$url/metrics" | awk '$1 ~ /^drops_entitlements_decided_total\{outcome="refused"/ {s += $2} END {print s+0}')
  stored=$(curl -s "$url/metrics" | awk '$1 ~ /^drops_eventsub_entitlements_total\{outcome="accepted"/ {s += $2} END {print s+0}')
  if [ "${stored:-0}" -gt 0 ] && [ "$((fulfilled + refused))" -ge "$stored" ] && [ "${waiting:-1}" = 0 ]; then break; fi
  if ! kill -0 "$host" 2>/dev/null; then echo "host died"; tail -20 "$work/host.log"; exit 1; fi
  sleep 0.2
done
t2=$(date +%s.%N)
printf 'entitlements stored: %s; notifications sent and acknowledged in %.2f s; all decided, delivered and FULFILLED (%s) or refused (%s) %.2f s after the first notification: %.0f entitlements/s\n' \
  "$stored" "$(echo "$t1 - $t0" | bc)" "$fulfilled" "$refused" "$(echo "$t2 - $t0" | bc)" "$(echo "$stored / ($t2 - $t0)" | bc -l)"
