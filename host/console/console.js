// The drops-host console: renders GET /v1/overview/stream (Server-Sent
// Events) and acts through the documented /v1 routes. Every string from the
// host is escaped before it reaches the page: campaign names, viewer ids and
// error reasons come from hostile input.
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const short = (hash) => esc(String(hash ?? "").slice(0, 12));
const num = (n) => Number(n ?? 0).toLocaleString("en");
// A size in bytes, in the largest binary unit under it.
const bytes = (n) => {
  const units = ["bytes", "KiB", "MiB", "GiB"];
  let v = Number(n ?? 0), u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u ? v.toFixed(1) : v} ${units[u]}`;
};
const ms = (micros) => (micros / 1000).toLocaleString("en", { maximumFractionDigits: 1 }) + " ms";
const when = (t) => (t ? new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");
const age = (t, now) => (t ? Math.max(0, Math.round((now - t) / 1000)) + " s" : "–");
// Changes the console asks for carry this header: the host refuses a
// cookie-only change without it (a form on another site cannot set it).
const CHANGE = { "X-Drops-Console": "1" };

let previous = null;
const charts = new Map();

// Replaces a block's markup only when it changed, and gives focus back to
// the element (by id) that had it, so keyboard users keep their place.
function patch(el, html) {
  if (el.dataset.html === html) return;
  const focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.id : null;
  el.innerHTML = html;
  el.dataset.html = html;
  if (focused && $(focused)) $(focused).focus();
}

function table(caption, head, rows) {
  const th = head.map((h) => `<th scope="col">${h}</th>`).join("");
  const body = rows.length ? rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="${head.length}">none</td></tr>`;
  return `<table><caption>${caption}</caption><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`;
}

// The interval's latency: the buckets' difference between two snapshots.
function interval(now, before) {
  const buckets = now.buckets.map((n, i) => n - (before ? before.buckets[i] : 0));
  const count = buckets.reduce((a, b) => a + b, 0);
  const q = (p) => {
    let seen = 0;
    for (let i = 0; i < buckets.length; i++) { seen += buckets[i]; if (seen >= Math.ceil(count * p)) return 2 ** i; }
    return 0;
  };
  return { count, p50: count ? q(0.5) : 0, p99: count ? q(0.99) : 0 };
}

function renderTraffic(o) {
  const secs = previous ? Math.max(0.001, (o.at - previous.at) / 1000) : 0;
  const rows = o.traffic.sources.map((s) => {
    const before = previous && previous.traffic.sources.find((p) => p.source === s.source);
    const rate = (n, b) => (before && secs ? ((n - b) / secs).toFixed(1) : "–");
    const lat = interval(s.ack, before && before.ack);
    const refused = Object.entries(s.refused).map(([r, n]) => `${esc(r)}: ${num(n)}`).join(", ") || "none";
    return [esc(s.source), rate(s.accepted, before && before.accepted), rate(s.duplicates, before && before.duplicates),
      lat.count ? `${ms(lat.p50)} / ${ms(lat.p99)}`
        : s.ack.count ? `<span class="muted">since start: ${ms(s.ack.p50_micros)} / ${ms(s.ack.p99_micros)}</span>` : "–",
      num(s.accepted), num(s.duplicates), refused];
  });
  const lag = Object.entries(o.traffic.engine).map(([p, l]) => [esc(p), num(l.cursor), num(l.events), l.seconds.toFixed(1) + " s"]);
  patch($("traffic-body"),
    `<p>Game servers connected: <strong id="e2-connections">${num(o.traffic.e2_connections)}</strong></p>` +
    table("Ingest (rates over the last update; totals since the host started)",
      ["Source", "Accepted /s", "Duplicates /s", "Ack p50 / p99", "Accepted", "Duplicates", "Refused by reason"], rows) +
    table("Engine lag behind the inbox", ["Partition", "Judged through", "Events behind", "Oldest waiting"], lag));
}

// What a Twitch Drops (EventSub) campaign did with its entitlements, in the order they move.
const OUTCOMES = [
  ["awaiting_link", "awaiting a linked account"], ["unmatched", "unmatched"], ["refused", "refused by the rule"],
  ["failed", "rule call failed (decided again)"], ["to_deliver", "to deliver"], ["delivered", "delivered, FULFILLED pending"],
  ["fulfilled", "delivered and FULFILLED"], ["fulfil_refused", "Twitch refused FULFILLED (retry in the API)"],
];

function entitlementOutcomes(c, i) {
  if (!c.entitlements) return "";
  const counts = c.entitlements.outcomes;
  const rows = OUTCOMES.filter(([k]) => counts[k]).map(([k, label]) => [esc(label), `<span id="campaign-${i}-entitlements-${k}">${num(counts[k])}</span>`]);
  const reasons = c.entitlements.reasons.map((r) => [esc(r.reason), num(r.entitlements)]);
  return table("Entitlements (Twitch Drops)", ["Outcome", "Entitlements"], rows) +
    (reasons.length ? table("Why refused", ["Reason", "Entitlements"], reasons) : "");
}

function renderCampaigns(o) {
  const body = $("campaigns-body");
  // Rebuilt when a campaign or one of its rewards comes or goes (a chart's series are fixed).
  const ids = o.campaigns.map((c) => [c.id, ...c.rewards.map((r) => r.id)].join("\t")).join("\n");
  if (body.dataset.ids !== ids) {
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    body.innerHTML = o.campaigns.map((c, i) =>
      `<article class="campaign" aria-labelledby="campaign-${i}-h"><h3 id="campaign-${i}-h">${esc(c.name)}</h3>` +
      `<div id="campaign-${i}-text"></div><figure><figcaption>Grants per reward over time</figcaption>` +
      `<div id="campaign-${i}-chart" class="chart"></div></figure><div id="campaign-${i}-viewers"></div></article>`).join("") || "<p>No campaign is loaded.</p>";
    body.dataset.ids = ids;
  }
  o.campaigns.forEach((c, i) => {
    const paused = c.paused ? `<p class="paused" id="campaign-${i}-paused">Paused by its circuit breaker: ${esc(c.paused.reason)}</p>` : "";
    const tiers = c.funnel.map((f) => f.minutes);
    const viewers = c.top_viewers.map((v) => {
      if (!tiers.length) return [esc(v.viewer_id), num(v.minutes)];
      const next = tiers.find((m) => m > v.minutes);
      return [esc(v.viewer_id), num(v.minutes), next === undefined ? "every tier" : `${num(next - v.minutes)} min to the ${num(next)}-minute tier`];
    });
    const viewerHead = tiers.length ? ["Viewer", "Minutes", "Progress"] : ["Viewer", "Minutes"];
    const funnel = c.funnel.length ? `<h4>Tier funnel</h4><ol class="funnel">` + c.funnel.map((f) =>
      `<li><span>${num(f.minutes)} min → ${esc(f.reward)}: <strong>${num(f.viewers)}</strong> of ${num(c.viewers)} viewers</span>` +
      `<progress max="${Math.max(1, c.viewers)}" value="${f.viewers}" aria-label="${esc(f.reward)}">${f.viewers}</progress></li>`).join("") + `</ol>` : "";
    patch($(`campaign-${i}-text`),
      `<p><span class="status status-${esc(c.status)}" id="campaign-${i}-status">${esc(c.status)}</span> ` +
      `${when(Date.parse(c.starts_at))} → ${when(Date.parse(c.ends_at))}</p>${paused}` +
      `<p>Plugin <code>${esc(c.plugin)}</code> version <code id="campaign-${i}-hash">${short(c.plugin_hash)}</code>; ` +
      `<strong>${num(c.viewers)}</strong> viewers with watch time; rule state ` +
      `<span id="campaign-${i}-state">${num(c.rule_state.keys)} keys, ${bytes(c.rule_state.bytes)} of ${bytes(c.rule_state.limit_bytes)}</span></p>` +
      table("Grants per reward", ["Reward", "Grants"], c.rewards.map((r) => [esc(r.name || r.id), `<span id="campaign-${i}-grants-${esc(r.id)}">${num(r.grants)}</span>`])) +
      funnel + entitlementOutcomes(c, i));
    patch($(`campaign-${i}-viewers`), viewers.length ? table("Longest-watching viewers", viewerHead, viewers) : "");
    chart(i, c);
  });
}

function chart(i, c) {
  const el = $(`campaign-${i}-chart`);
  if (!el || !window.uPlot || !c.rewards.length) return;
  const xs = c.rewards[0].over_time.map((p) => p[0] / 1000);
  const data = [xs, ...c.rewards.map((r) => r.over_time.map((p) => p[1]))];
  const width = Math.max(280, Math.min(900, el.clientWidth || 600));
  let plot = charts.get(i);
  if (!plot) {
    const colours = ["#0b62c4", "#c4420b", "#2b8a3e", "#8a2b7e", "#6b6b00"];
    plot = new uPlot({ width, height: 180, series: [{}, ...c.rewards.map((r, k) => ({ label: r.name || r.id, stroke: colours[k % colours.length], width: 2 }))],
      axes: [{}, { label: "grants" }] }, data, el);
    charts.set(i, plot);
  } else {
    plot.setData(data);
    if (Math.abs(plot.width - width) > 20) plot.setSize({ width, height: 180 });
  }
}

function renderPlugins(o) {
  const names = o.plugins.map((p) => p.name);
  const select = $("replay-plugin-name");
  if (select.dataset.names !== names.join("\n")) {
    select.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
    select.dataset.names = names.join("\n");
  }
  patch($("plugins-body"), o.plugins.map((p, i) => {
    const c = p.calls;
    const failed = Object.entries(c.failed).map(([k, n]) => `${esc(k)}: ${num(n)}`).join(", ") || "none";
    const calls = c.ok + Object.values(c.failed).reduce((a, b) => a + b, 0);
    const breakers = p.campaigns.map((b) => `<li>${esc(b.campaign_id)}: <span class="breaker-${b.state}">${b.state === "open" ? "open (paused): " + esc(b.paused && b.paused.reason) : "closed"}</span></li>`).join("");
    const versions = p.versions.map((v, k) => {
      const serving = v.hash === p.hash;
      const action = serving ? "<strong>serving</strong>" :
        `<button type="button" id="rollback-${i}-${k}" data-plugin="${esc(p.name)}" data-hash="${esc(v.hash)}" class="rollback">Roll back to ${short(v.hash)}</button>`;
      return [`<code>${short(v.hash)}</code>`, when(v.first_seen_at), when(v.went_live_at), num(v.size) + " B", action];
    });
    return `<article class="plugin" aria-labelledby="plugin-${i}-h"><h3 id="plugin-${i}-h">${esc(p.name)} <code id="plugin-${i}-hash">${short(p.hash)}</code></h3>` +
      `<p>${num(calls)} calls, ${num(c.ok)} ok; failed by kind: <span id="plugin-${i}-failed">${failed}</span>; ` +
      `latency p50 / p99 ${c.latency.count ? ms(c.latency.p50_micros) + " / " + ms(c.latency.p99_micros) : "–"}; ` +
      `fuel per call ${calls ? num(Math.round(c.fuel / calls)) : "–"}</p>` +
      `<p>Circuit breakers:</p><ul>${breakers || "<li>no campaign uses it</li>"}</ul>` +
      table("Versions served here", ["Version", "First loaded", "Last went live", "Size", ""], versions) + `</article>`;
  }).join("") || "<p>No plugin is loaded.</p>");
}

function renderDelivery(o) {
  const d = o.delivery;
  const counts = Object.entries(d.manifests).map(([s, n]) => [esc(s), `<span id="manifests-${esc(s)}">${num(n)}</span>`]);
  const failed = d.failed.map((m, k) => [`<span class="id">${esc(m.id)}</span>`, esc(m.campaign_id), num(m.users), esc(m.last_error), num(m.attempts),
    `<button type="button" id="retry-${k}" class="retry" data-id="${esc(m.id)}">Retry</button>`]);
  const sinks = d.sinks.map((s) => [esc(s.name), num(s.delivered_through), num(s.pending), age(s.oldest_pending_at, o.at),
    s.failed_attempts ? `${num(s.failed_attempts)} failed tries: ${esc(s.last_error)}` : "delivering"]);
  patch($("delivery-body"),
    `<p>Oldest manifest not yet uploaded: ${age(d.oldest_undelivered_at, o.at)}</p>` +
    table("Twitch manifests by status", ["Status", "Manifests"], counts) +
    table("Failed manifests", ["Manifest", "Campaign", "Users", "Last error", "Attempts", ""], failed) +
    table("Sinks (grants to the studio)", ["Sink", "Delivered through grant", "Pending", "Oldest pending", "State"], sinks));
}

function render(o) {
  renderTraffic(o);
  renderCampaigns(o);
  renderPlugins(o);
  renderDelivery(o);
  previous = o;
  $("connection").textContent = `Live: updated ${when(o.at)}`;
}

async function act(url, body, done) {
  const status = $("action-status");
  try {
    const answer = await fetch(url, { method: "POST", headers: { ...CHANGE, "Content-Type": "application/json" }, body: JSON.stringify(body ?? {}) });
    const text = await answer.text();
    let json = {};
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    status.textContent = answer.ok ? done(json) : `Refused (${answer.status}): ${json.error || text}`;
  } catch (e) {
    status.textContent = `The host did not answer: ${e}`;
  }
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button");
  if (!button) return;
  if (button.classList.contains("rollback")) {
    const { plugin, hash } = button.dataset;
    if (!confirm(`Roll plugin ${plugin} back to version ${hash.slice(0, 12)} for every campaign that uses it?`)) return;
    act(`/v1/plugins/${encodeURIComponent(plugin)}/rollback`, { hash }, (j) => `Plugin ${j.name} now serves ${String(j.hash).slice(0, 12)}.`);
  } else if (button.classList.contains("retry")) {
    const { id } = button.dataset;
    if (!confirm(`Upload manifest ${id} to Twitch again?`)) return;
    act(`/v1/manifests/${encodeURIComponent(id)}/retry`, null, (j) => `Manifest ${j.id} is queued for upload again.`);
  }
});

$("replay-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("replay-result");
  out.textContent = "Replaying…";
  try {
    const answer = await fetch("/v1/replay", { method: "POST", headers: CHANGE, body: new FormData(e.target) });
    const j = await answer.json();
    if (!answer.ok) { out.innerHTML = `<p class="error">Refused (${answer.status})${j.field ? " " + esc(j.field) : ""}: ${esc(j.error)}</p>`; return; }
    const list = (title, keys, total) => `<h4>${title}: ${num(total)}</h4><ul>` +
      keys.map((g) => `<li>${esc(g.campaign_id)} · ${esc(g.reward_id)} · ${esc(g.user_id)}</li>`).join("") + `</ul>`;
    out.innerHTML = `<p>${num(j.events_read)} events (${num(j.duplicates)} duplicates); plugin errors: live ${num(j.live_errors)}, candidate ${num(j.candidate_errors)}.</p>` +
      table("Grants per reward: the live version beside the candidate", ["Campaign", "Reward", "Live", "Candidate"],
        j.rewards.map((r) => [esc(r.campaign_id), esc(r.reward_id), `<span class="replay-live">${num(r.live)}</span>`, `<span class="replay-candidate">${num(r.candidate)}</span>`])) +
      list("Gained with the candidate", j.gained, j.gained_total) + list("Lost with the candidate", j.lost, j.lost_total);
  } catch (err) {
    out.textContent = `The dry run failed: ${err}`;
  }
});

function connect() {
  const source = new EventSource("/v1/overview/stream");
  source.addEventListener("overview", (e) => render(JSON.parse(e.data)));
  source.addEventListener("error", (e) => {
    if (e.data) { $("connection").textContent = `The host answered: ${e.data}`; return; }
    $("connection").textContent = "Disconnected; reconnecting…";
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      // An ended session shows the login form again; anything else is retried.
      fetch("/v1/overview?buckets=1&viewers=0").then((r) => (r.status === 401 ? location.reload() : setTimeout(connect, 2000)),
        () => setTimeout(connect, 2000));
    }
  });
}
connect();
