#!/usr/bin/env bash
# Reruns every measurement of docs/BENCHMARKS.md (about 12 minutes on the
# 2-core CI machine, builds excluded) and rewrites its "Latest full run"
# section: each figure with the command that made it, the machine, the date
# and the comparison it is judged by. Needs python3 for the rewrite.
# RESULTS=DIR skips the runs and rewrites the table from DIR's saved outputs
# (ack.txt, load.txt, memory.txt, e2.txt) and target/criterion.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RESULTS:-$(mktemp -d /tmp/drops-bench.XXXXXX)}
if [ -z "${RESULTS:-}" ]; then
scripts/build-plugins.sh >/dev/null
cargo build --quiet --profile plugin --target wasm32-unknown-unknown -p json-abi-tiers
cargo build --quiet --release -p drops-host

echo "== criterion: plugin call (and its peers: native, JSON ABI, Rhai) and engine step"
cargo bench --quiet -p drops-host --bench engine --features bench-peers -- --warm-up-time 1 --measurement-time 3 2>&1 | tee "$out/criterion.txt" | grep -E "^[a-z_]+/|time:" || true
echo "== sequential acknowledgement latency"
benches/ack_latency.sh 300 1000 | tee "$out/ack.txt"
echo "== one 10 M viewer heartbeat, hot reload"
benches/load.sh 20 100 2 | tee "$out/load.txt"
echo "== memory per tracked viewer"
benches/memory.sh 1000 1000 | tee "$out/memory.txt"
echo "== E2 at 1,000 connections"
benches/e2_load.sh 1000 60 20 normal | tee "$out/e2.txt"
fi

python3 - "$out" docs/BENCHMARKS.md <<'PY'
import json, os, re, subprocess, sys, datetime
out, doc = sys.argv[1], sys.argv[2]
def est(group, name):
    path = os.path.join("target/criterion", group, name, "new/estimates.json")
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"]  # ns
def text(name):
    with open(os.path.join(out, name)) as f:
        return f.read()
us = lambda ns: f"{ns / 1000:.1f} µs"
rows = []
w = {n: est("plugin_call", f"wasm/{n}") for n in (1, 1000, 10000)}
nat = {n: est("plugin_call", f"native/{n}") for n in (1, 1000, 10000)}
marg_w = (w[10000] - w[1]) / 9999
marg_n = (nat[10000] - nat[1]) / 9999
rows.append(("plugin call, fixed cost (1 viewer)", us(w[1]), f"native {us(nat[1])}; goal ≤ 10 µs", "`cargo bench -p drops-host --bench engine`"))
rows.append(("plugin call, per viewer (1 → 10,000)", f"{marg_w:.1f} ns", f"native {marg_n:.1f} ns ({marg_w / marg_n:.1f}x); goal ≤ 15 ns", "same"))
peer = lambda name: (est("plugin_call", f"{name}/10000") - est("plugin_call", f"{name}/1")) / 9999
marg_j, marg_r = peer("json_abi"), peer("rhai")
rows.append(("the same tiers rule per viewer, done the other ways", f"JSON ABI {marg_j:.0f} ns, Rhai {marg_r:.0f} ns",
             f"the plugin is {marg_j / marg_w:.0f}x faster than the JSON ABI (goal ≥ 5x), {marg_r / marg_w:.0f}x faster than Rhai (goal ≥ 50x)",
             "`cargo bench -p drops-host --bench engine --features bench-peers`"))
rows.append(("plugin call, 1,000 / 10,000 viewers", f"{us(w[1000])} / {us(w[10000])}", f"native {us(nat[1000])} / {us(nat[10000])} ({w[1000] / nat[1000]:.0f}x / {w[10000] / nat[10000]:.0f}x)", "same"))
step = {n: est("engine_step", f"count_and_decide/{n}") for n in (1000, 10000)}
for n, ns in step.items():
    rows.append((f"engine step, {n:,} viewers", us(ns), f"{n / ns * 1e3:.2f} M viewer-minutes/s on one core", "same"))
ack = json.loads([l for l in text("ack.txt").splitlines() if l.startswith("{")][-1])
a, f, h = ack["ack"], ack["fsync_floor"], ack["http_floor"]
rows.append(("sequential acknowledgement, 1,000 viewers (p50 / p99 / max)", f"{a['p50']:.2f} / {a['p99']:.2f} / {a['max']:.2f} ms",
             f"floors: fdatasync {f['p50']:.2f} / {f['p99']:.2f} ms, /healthz {h['p50']:.2f} / {h['p99']:.2f} ms; goal p50 ≤ {ack['p50_limit']:.2f}, p99 ≤ {ack['p99_limit']:.2f} ms; {ack['channels_per_minute']:,.0f} channels/minute", "`benches/ack_latency.sh 300 1000`"))
load = text("load.txt")
grab = lambda pat, s: (re.search(pat, s) or [None, "?"])[1]
acked = grab(r'POST: 200 in ([0-9.]+) s', load)
evaluated = grab(r'counted\) ([0-9.]+) s', load)
peak = grab(r'after the checkpoint: ([0-9]+) MiB', load)
rows.append(("one heartbeat of 10,000,000 viewers", f"acked in {float(acked):.1f} s, evaluated {float(evaluated):.1f} s after the POST began",
             f"host peak RSS {peak} MiB; goal < 1,024 MiB", "`benches/load.sh 20 100 2`"))
swaps = [int(x) for x in re.findall(r"swap \d: (\d+) ms", load)]
rows.append(("hot reload, file renamed → new version serving", " / ".join(f"{s} ms" for s in swaps), "goal p99 < 100 ms", "same"))
mem = text("memory.txt")
resident = grab(r'per million tracked viewers: ([0-9]+) MiB resident', mem)
at_peak = grab(r'MiB resident, ([0-9]+) MiB at the peak', mem)
rows.append(("memory per million tracked viewers", f"{resident} MiB resident, {at_peak} MiB at the peak", "goal < 300 MB", "`benches/memory.sh 1000 1000`"))
e2 = text("e2.txt")
p99 = grab(r'quantile="0\.99"\} ([0-9.e+-]+)', e2)
e2_peak = grab(r'host peak RSS: ([0-9]+) MiB', e2)
p99_text = f"{float(p99):.2f} s" if p99 != "?" else "?"
rows.append(("E2, 1,000 connections at 1 message/s: message → grants stored p99", p99_text, f"peak RSS {e2_peak} MiB; goal p99 < 1 s", "`benches/e2_load.sh 1000 60 20 normal`"))
commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
lines = ["<!-- run-all:begin (written by benches/run-all.sh; edit the script, not this table) -->",
         f"Measured {datetime.date.today()} by `benches/run-all.sh` at commit `{commit[:60]}`, on this",
         f"machine kind (2 cores, 24 GiB, release build; {os.uname().sysname} {os.uname().release}).", "",
         "| measurement | figure | judged against | command |", "| --- | --- | --- | --- |"]
lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
lines.append("<!-- run-all:end -->")
with open(doc) as f:
    s = f.read()
block = "\n".join(lines)
if "<!-- run-all:begin" in s:
    s = re.sub(r"<!-- run-all:begin.*?<!-- run-all:end -->", lambda _: block, s, flags=re.S)
else:
    s = s.replace("\n## 1.", "\n## Latest full run\n\n" + block + "\n\n## 1.", 1)
with open(doc, "w") as f:
    f.write(s)
print(block)
PY
