#!/usr/bin/env bash
# Crash soak: Twitch-like traffic (`drops-host simulate`) for DURATION seconds
# while a loop SIGKILLs the host at random points and starts it again. Then:
#   1. every heartbeat the host acknowledged is stored (nothing acknowledged is lost);
#   2. the stored watch-time and grants equal a replay of the event recording
#      (no minute or grant doubled or lost across the crashes).
# Usage: benches/soak.sh [duration_secs=600] [channels=20] [viewers=50]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600} channels=${2:-20} viewers=${3:-50}
scripts/build-plugins.sh >/dev/null
cargo build --quiet --release -p drops-host
bin=$PWD/target/release/drops-host
work=$(mktemp -d /tmp/drops-soak.XXXXXX)
mkdir -p "$work/rules/campaigns" "$work/rules/plugins"
for p in watch-time-tiers official-channels-only streak; do
  cp "target/wasm32-unknown-unknown/plugin/${p//-/_}.wasm" "$work/rules/plugins/$p.wasm"
done
cp examples/rules/campaigns/{summer-boss-rush,official-channel,official-daily-cap,daily-streak}.toml "$work/rules/campaigns/"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
cat > "$work/drops-host.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
rules_dir = "$work/rules"
record_events = "$work/events.jsonl"
[engine]
checkpoint_interval_secs = 2
TOML

host=
start_host() {
  "$bin" serve --config "$work/drops-host.toml" >> "$work/stdout" 2>> "$work/host.log" &
  host=$!
  for _ in $(seq 1 200); do curl -sf "$url/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "host did not start"; tail -20 "$work/host.log"; exit 1
}
trap 'kill -9 $host $sim 2>/dev/null || true' EXIT
start_host

# One simulated minute per second: DURATION minutes of reports, one channel at a time as Twitch sends them.
"$bin" simulate --target "$url" --channels "$channels" --viewers "$viewers" --multi-viewers 5 \
  --minutes "$duration" --speed 60 --start 2026-11-21T00:00:00Z --redeliver-every 7 \
  --timeout-secs 5 --verbose false --acked-log "$work/acked" > "$work/simulate.out" 2> "$work/simulate.err" &
sim=$!
kills=0
while kill -0 "$sim" 2>/dev/null; do
  sleep "$(python3 -c 'import random; print(round(random.uniform(4, 25), 2))')"
  kill -0 "$sim" 2>/dev/null || break
  kill -9 "$host"; wait "$host" 2>/dev/null || true
  kills=$((kills + 1))
  start_host
done
wait "$sim" || true
kill -TERM "$host"; wait "$host"
echo "== $kills SIGKILLs in ${duration} s of traffic; simulate: $(tail -1 "$work/simulate.out")"

python3 - "$work" <<'PY'
import sqlite3, subprocess, sys, re
work = sys.argv[1]
db = sqlite3.connect(f"{work}/data/drops-host.db")
# The inbox lives in its own file beside the database (docs/operations.md).
db.execute("ATTACH DATABASE ? AS inbox_file", (f"{work}/data/drops-host.inbox.db",))
acked = set(open(f"{work}/acked").read().split())
stored = {row[0] for row in db.execute("SELECT dedup_key FROM inbox WHERE source = 'vhs'")}
lost = acked - stored
print(f"acknowledged heartbeats: {len(acked)}; stored: {len(stored)}; acknowledged but lost: {len(lost)}")
minutes = db.execute("SELECT COALESCE(SUM(minutes), 0) FROM campaign_viewers").fetchone()[0]
grants = dict(((c, r), n) for c, r, n in db.execute("SELECT campaign_id, reward_id, COUNT(*) FROM grants GROUP BY 1, 2"))
out = subprocess.run(["target/release/drops-host", "replay", "--rules", f"{work}/rules",
                      "--events", f"{work}/events.jsonl", "--config", f"{work}/drops-host.toml"],
                     capture_output=True, text=True, check=True).stdout
summary = re.search(r"(\d+) events \((\d+) duplicates\), (\d+) viewer-minutes counted, (\d+) grants", out)
replayed = {}
for line in out.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[2].isdigit():
        replayed[(parts[0], parts[1])] = int(parts[2])
print(f"watch-time: stored {minutes} viewer-minutes, replay of the recording {summary.group(3)}"
      f" ({summary.group(1)} events recorded, {summary.group(2)} recorded again after a crash)")
print(f"grants: stored {sum(grants.values())}, replay {sum(replayed.values())}")
ok = not lost and int(summary.group(3)) == minutes and replayed == grants
if not ok:
    print("MISMATCH", {k: (grants.get(k), replayed.get(k)) for k in set(grants) | set(replayed) if grants.get(k) != replayed.get(k)})
print("soak: OK" if ok else "soak: FAILED")
sys.exit(0 if ok else 1)
PY
