# Sourced by the bench scripts: the release build, a work folder, and the
# host started on its config and killed (with the folder removed) on exit.

# Builds the plugins and the release host; makes $work with empty rules and data folders.
bench_setup() {
  scripts/build-plugins.sh >/dev/null
  cargo build --quiet --release -p drops-host
  bin=target/release/drops-host
  work=$(mktemp -d "/tmp/drops-$1.XXXXXX")
  mkdir -p "$work/rules/campaigns" "$work/rules/plugins" "$work/data"
}

# Installs an example plugin by its file stem (watch_time_tiers -> watch-time-tiers.wasm).
install_plugin() {
  cp "target/wasm32-unknown-unknown/plugin/$1.wasm" "$work/rules/plugins/${1//_/-}.wasm"
}

# Writes $work/drops-host.toml: a free port, $work's folders, SQLite durability
# $1, any further top-level lines in $2, and the admin token the scripts use.
# Scripts append their own sections after it.
write_config() {
  cat > "$work/drops-host.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$work/data"
rules_dir = "$work/rules"
sqlite_synchronous = "$1"
${2:-}
[admin]
token = "bench-token-0123456"
TOML
}

# Serves $work/drops-host.toml; sets $host (pid) and $url.
start_host() {
  "$bin" serve --config "$work/drops-host.toml" > "$work/stdout" 2> "$work/host.log" &
  host=$!
  trap 'kill -9 $host 2>/dev/null; wait $host 2>/dev/null || true; rm -rf "$work"' EXIT
  for _ in $(seq 1 100); do grep -q listening "$work/stdout" && break; sleep 0.1; done
  url=$(sed -n 's/drops-host listening on //p' "$work/stdout")
}

# A metric's value from the host's /metrics.
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1==m {print $2}'; }

# Copies plugin $1 to $2 with a custom section numbered $3 appended: the same
# rule under a new hash. Sets $want to the new version's SHA-256.
plugin_version() {
  cp "$1" "$2"
  printf '\x00\x0c\x04bench%06d' "$3" >> "$2"
  want=$(sha256sum "$2" | cut -c1-64)
}

# Viewer-minutes the engine has counted (its watch-time counter is in seconds).
counted_minutes() { local s; s=$(metric drops_engine_watch_time_seconds_total | cut -d. -f1); echo $(( ${s:-0} / 60 )); }

# Renames $2 new versions of the installed plugin file $1 into place, each
# timed until GET /v1/campaigns reports its hash (hot reload, end to end).
time_swaps() {
  local orig=$1 start
  for i in $(seq 1 "$2"); do
    plugin_version "$orig" "$work/next.wasm" "$i"
    start=$(date +%s%N)
    mv "$work/next.wasm" "$orig"
    until curl -s -H 'authorization: Bearer bench-token-0123456' "$url/v1/campaigns" | grep -q "$want"; do sleep 0.002; done
    echo "swap $i: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  done
}
