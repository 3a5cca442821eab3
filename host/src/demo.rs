//! `drops-host demo`: a host with the example campaigns and plugins on SQLite,
//! fed by simulated Twitch traffic, showing grants and manifests as they come,
//! and the manifests uploaded to a local stand-in for Twitch
//! ([`crate::simulate::twitch_upload`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::app::RunningHost;
use crate::config::{E2Publisher, Settings, StaticToken, TokenKind};
use crate::manifests::ManifestFile;
use crate::rules::LoadedCampaign;
use crate::simulate::{self, twitch_upload, SimulateArgs};
use crate::store::GrantFilter;

const DEMO_ADMIN_TOKEN: &str = "demo-admin-token";
const DEMO_E2_TOKEN: &str = "demo-e2-app-token";
const DEMO_CLIENT_ID: &str = "demo-client-id";
const DEMO_GAME_ID: &str = "demo-game-id";
const DEMO_EVENTSUB_SECRET: &str = "demo-eventsub-secret";

/// Options of `drops-host demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Example campaigns to serve.
    #[arg(long, default_value = "examples/rules/campaigns")]
    pub campaigns: PathBuf,
    /// Folder with the built example plugins (*.wasm).
    #[arg(long, default_value = "target/wasm32-unknown-unknown/plugin")]
    pub plugins: PathBuf,
    /// Where the demo keeps its data (emptied first).
    #[arg(long, default_value = "demo-data")]
    pub data_dir: PathBuf,
    /// Simulated minutes of traffic.
    #[arg(long, default_value_t = 35)]
    pub minutes: u32,
    /// Simulated minutes per real minute (60: one per second).
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// Keep serving on this address after the simulation, until Ctrl-C.
    #[arg(long)]
    pub keep_serving: Option<std::net::SocketAddr>,
}

/// The console's address as a browser should open it: a loopback host as
/// `localhost`, where browsers keep the console's `Secure` cookie over plain HTTP.
fn console_url(addr: std::net::SocketAddr) -> String {
    match addr.ip().is_loopback() || addr.ip().is_unspecified() {
        true => format!("http://localhost:{}/console", addr.port()),
        false => format!("http://{addr}/console"),
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rules_dir = prepare(&args)?;
    let mut settings = Settings {
        data_dir: args.data_dir.clone(),
        rules_dir,
        listen: args.keep_serving.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        ..Settings::default()
    };
    settings.admin.token = Some(DEMO_ADMIN_TOKEN.into());
    // A recording to try a candidate plugin on, in the console's Replay panel.
    settings.record_events = Some(args.data_dir.join("events.jsonl"));
    settings.e2.allowlist = vec![E2Publisher { client_id: DEMO_CLIENT_ID.into(), game_id: DEMO_GAME_ID.into() }];
    settings.e2.tokens = vec![StaticToken {
        token: DEMO_E2_TOKEN.into(),
        kind: TokenKind::App,
        client_id: DEMO_CLIENT_ID.into(),
        user_id: None,
        expires_at: None,
    }];
    settings.eventsub.secret = Some(DEMO_EVENTSUB_SECRET.into());
    settings.eventsub.reconcile_interval_secs = 5;
    settings.manifests.flush_interval_secs = 3;
    settings.engine.checkpoint_interval_secs = 2;
    let stand_in = twitch_upload::start(([127, 0, 0, 1], 0).into()).await.context("starting the Twitch stand-in")?;
    settings.twitch.client_id = Some(DEMO_CLIENT_ID.into());
    settings.twitch.client_secret = Some("demo-client-secret".into());
    settings.twitch.auth_base_url = format!("http://{}", stand_in.addr);
    settings.twitch.api_base_url = format!("http://{}", stand_in.addr);
    settings.twitch.retry_initial_ms = 200;
    settings.sink.webhook = Some(crate::config::WebhookSettings {
        url: format!("http://{}/webhook", stand_in.addr),
        secret: Some(twitch_upload::WEBHOOK_SECRET.into()),
        max_batch: 100,
        request_timeout_secs: 5,
        retry_initial_ms: 200,
        retry_max_secs: 5,
    });
    // One entitlement Twitch lists as CLAIMED that its webhook never brought:
    // reconciliation finds it.
    if let Ok(mut received) = stand_in.received.lock() {
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
        let (user_id, _) = simulate::eventsub::entitled_viewer(0);
        received.claimed.push(serde_json::json!({"id": "ent-the-webhook-missed", "benefit_id": "benefit-sword",
            "timestamp": now, "user_id": user_id, "game_id": DEMO_GAME_ID, "fulfillment_status": "CLAIMED",
            "last_updated": now}));
    }
    let host = RunningHost::start(settings.clone(), crate::telemetry::init_metrics()).await?;
    let rules = host.rules.load_full();
    println!("\n== drops-host demo: serving on http://{} with SQLite at {}", host.addr, settings.database_url());
    println!("   console: {} (admin token {DEMO_ADMIN_TOKEN})", console_url(host.addr));
    println!(
        "   manifests are uploaded to a local stand-in for Twitch, and every grant is POSTed to a stand-in studio webhook, at http://{}",
        stand_in.addr
    );
    for c in rules.campaigns() {
        println!(
            "   campaign `{}` ({}): game {}, plugin {} ({}…), rule {}",
            c.def.name,
            c.def.id,
            c.def.game,
            c.plugin.name,
            &c.plugin.hash.0[..12],
            c.wit.config
        );
    }
    for e in rules.errors() {
        println!("   NOT LOADED {}: {}", e.file.display(), e.error);
    }
    anyhow::ensure!(!rules.campaigns().is_empty(), "no campaign loaded: build the plugins first (see README)");

    let sim = SimulateArgs {
        target: format!("http://{}", host.addr),
        token: None,
        channels: 3,
        viewers: 20,
        multi_viewers: 5,
        minutes: args.minutes,
        speed: args.speed,
        game: "GameName".into(),
        start: None,
        broadcaster_prefix: "broadcaster-".into(),
        viewer_prefix: "viewer-".into(),
        seed: 0,
        redeliver_every: 7,
        concurrency: 1,
        timeout_secs: 15,
        verbose: false,
        e2_token: Some(DEMO_E2_TOKEN.into()),
        e2_client_id: DEMO_CLIENT_ID.into(),
        e2_game_id: DEMO_GAME_ID.into(),
        boss_every: 10,
        idle_channels: 1,
        e2_messages_per_window: settings.e2.messages_per_window,
        e2_window_secs: settings.e2.window_secs,
        admin_token: Some(DEMO_ADMIN_TOKEN.into()),
        acked_log: None,
        eventsub: simulate::eventsub::EventSubArgs {
            eventsub_secret: Some(DEMO_EVENTSUB_SECRET.into()),
            entitled_viewers: 12,
            drops_campaign: "d1e2f3a4-launch-drops".into(),
            benefits: "benefit-sword,benefit-shield".into(),
            entitlements_per_message: 4,
        },
    };
    println!(
        "== simulating Twitch: {} channels of GameName, {} viewers each + {} watching all of them, {} minutes at {}x, every 7th report redelivered",
        sim.channels, sim.viewers, sim.multi_viewers, sim.minutes, sim.speed
    );
    println!(
        "== simulating game servers over E2: one per broadcaster, a boss falls every {} minutes; broadcaster-{} sits idle on a menu\n",
        sim.boss_every,
        sim.channels - 1
    );
    println!(
        "== and today's Drops over EventSub: {} viewers earn drops of campaign {} (signed notifications, with redeliveries and duplicates); every third links their game account only at the end\n",
        sim.eventsub.entitled_viewers, sim.eventsub.drops_campaign
    );
    let watcher = tokio::spawn(watch_grants(host.store.clone()));
    let report = simulate::run(&sim).await?;
    // Let the engine catch up, the batcher write the last manifests and the uploader send them.
    wait_for_delivery(&host.store, Duration::from_secs(20)).await;
    if let Some(addr) = args.keep_serving {
        println!(
            "\n== still serving on http://{addr}; console: {} (admin token {DEMO_ADMIN_TOKEN}); Ctrl-C to stop",
            console_url(host.addr)
        );
        println!(
            "   its Replay panel takes the recording {} and a candidate plugin (target/wasm32-unknown-unknown/plugin/*.wasm)",
            args.data_dir.join("events.jsonl").display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    host.shutdown();
    let store = host.store.clone();
    host.wait().await?;
    watcher.abort();
    summary(&settings, &report).await?;
    if let Ok(received) = stand_in.received.lock() {
        println!(
            "   the Twitch stand-in took {} PUTs: {} manifests, {} users",
            received.puts,
            received.manifests.len(),
            received.users()
        );
        println!(
            "   the studio's webhook took {} grants (signatures checked; {} refused)",
            received.webhook_grants.len(),
            received.webhook_bad_signatures
        );
        println!(
            "   EventSub: the studio's webhook took the items of {} entitlements; Twitch was told FULFILLED for {} ({} requests, at most {} ids each, none twice: {})",
            received.webhook_items.len(),
            received.fulfilled.len(),
            received.fulfil_requests,
            received.most_ids_per_update,
            received.fulfilled.values().all(|n| *n == 1)
        );
        let mut shown: Vec<_> = received.webhook_items.iter().collect();
        shown.sort();
        for (entitlement, items) in shown.into_iter().take(5) {
            println!("     {entitlement}: {}", items.join(", "));
        }
    }
    store.close().await;
    Ok(())
}

/// Waits (at most `limit`) until every grant is in a manifest, no manifest
/// waits for upload and the webhook has every grant.
async fn wait_for_delivery(store: &crate::store::Store, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while tokio::time::Instant::now() < deadline {
        let unbatched = store.unbatched_grants(i64::MAX, 1).await.map(|g| g.len()).unwrap_or(1);
        let undelivered = store.manifest_backlog().await.map(|(_, oldest)| oldest.is_some()).unwrap_or(true);
        let webhook_behind = store.sink_backlog("webhook").await.map(|b| b.pending > 0).unwrap_or(true);
        let entitlements_behind =
            store.entitlement_backlog().await.map(|b| b.to_deliver + b.to_fulfil > 0).unwrap_or(true);
        if unbatched == 0 && !undelivered && !webhook_behind && !entitlements_behind {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Copies the example campaigns and built plugins into a fresh rules directory.
fn prepare(args: &DemoArgs) -> anyhow::Result<PathBuf> {
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).with_context(|| format!("emptying {}", args.data_dir.display()))?;
    }
    let rules = args.data_dir.join("rules");
    copy_files(&args.campaigns, &rules.join("campaigns"), "toml", |_| true)?;
    // Only the plugins the campaigns bind: the build folder also holds test
    // plugins and benchmark peers, which are no rules.
    let bound = bound_plugins(&rules.join("campaigns"));
    let copied = copy_files(&args.plugins, &rules.join("plugins"), "wasm", |name| bound.contains(name))?;
    anyhow::ensure!(
        copied > 0,
        "no plugins in {}: run `cargo build --profile plugin --target wasm32-unknown-unknown -p watch-time-tiers` first",
        args.plugins.display()
    );
    Ok(rules)
}

/// The plugin names the campaign files in `dir` bind (`[rule] plugin`).
fn bound_plugins(dir: &Path) -> std::collections::BTreeSet<String> {
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path());
    files
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter_map(|p| LoadedCampaign::parse(&p).ok())
        .map(|(def, _)| def.rule.plugin)
        .collect()
}

/// Copies the `ext` files of `from` whose name (Cargo's underscores as the
/// host's dashes, without the extension) `keep` accepts into `to`.
fn copy_files(from: &Path, to: &Path, ext: &str, keep: impl Fn(&str) -> bool) -> anyhow::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        // Cargo names artifacts with underscores; campaigns name plugins with dashes.
        let stem = path.file_stem().map(|s| s.to_string_lossy().replace('_', "-")).unwrap_or_default();
        if path.extension().is_some_and(|e| e == ext) && keep(&stem) {
            std::fs::copy(&path, to.join(format!("{stem}.{ext}")))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Prints grants as the engine stores them.
async fn watch_grants(store: std::sync::Arc<crate::store::Store>) {
    let mut after = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(grants) = store.list_grants(&GrantFilter { after_id: Some(after), ..Default::default() }).await else {
            continue;
        };
        let mut by_reward: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for g in &grants {
            after = after.max(g.id);
            by_reward.entry((g.campaign_id.clone(), g.reward_id.clone())).or_default().push(g.user_id.clone());
        }
        for ((campaign, reward), users) in by_reward {
            let shown: Vec<_> = users.iter().take(4).cloned().collect();
            let more = if users.len() > 4 { format!(" and {} more", users.len() - 4) } else { String::new() };
            println!("grant: {campaign} / {reward} -> {}{more}", shown.join(", "));
        }
    }
}

async fn summary(settings: &Settings, report: &simulate::SimulateReport) -> anyhow::Result<()> {
    let store = crate::store::Store::connect(&settings.database_url()).await?;
    let grants = store.list_grants(&GrantFilter { limit: Some(100_000), ..Default::default() }).await?;
    let manifests = store.list_manifests().await?;
    let mut per_reward: BTreeMap<(String, String), usize> = BTreeMap::new();
    for g in &grants {
        *per_reward.entry((g.campaign_id.clone(), g.reward_id.clone())).or_default() += 1;
    }
    println!("\n== summary");
    println!(
        "   heartbeats: {} sent, {} stored, {} duplicates recognised; {} viewer-minutes",
        report.tries, report.accepted, report.duplicates, report.viewer_minutes
    );
    println!(
        "   game state: {} E2 messages, {} acknowledged, {} boss kills",
        report.e2.messages, report.e2.acks, report.boss_kills
    );
    println!("   {:<28} {:<24} {:>7}", "campaign", "reward", "grants");
    for ((campaign, reward), n) in &per_reward {
        println!("   {campaign:<28} {reward:<24} {n:>7}");
    }
    // Per campaign and broadcaster: shows the idle broadcaster earning time-based
    // crates but no active-play badge, and boss trophies only where bosses fell.
    let broadcasters: std::collections::BTreeSet<&str> = grants.iter().map(|g| g.broadcaster_id.as_str()).collect();
    let mut per_broadcaster: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for g in &grants {
        *per_broadcaster.entry(&g.campaign_id).or_default().entry(&g.broadcaster_id).or_default() += 1;
    }
    println!("   grants per broadcaster:");
    for (campaign, counts) in &per_broadcaster {
        let line: Vec<String> =
            broadcasters.iter().map(|b| format!("{b} {}", counts.get(b).copied().unwrap_or(0))).collect();
        println!("     {campaign:<28} {}", line.join(", "));
    }
    println!("   manifests in {}: {}", settings.manifest_dir().display(), manifests.len());
    for m in &manifests {
        println!(
            "     {}.json  {} / {} / {}: {} users ({})",
            m.id, m.campaign_id, m.broadcaster_id, m.item_id, m.users, m.status
        );
    }
    if let Some(path) = manifests.first().and_then(|m| m.path.clone()) {
        let text = std::fs::read_to_string(&path)?;
        let file: ManifestFile = serde_json::from_str(&text)?;
        let mut shown = text.clone();
        if shown.len() > 400 {
            let mut cut = 400;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push('…');
        }
        println!("   {path} ({} users):\n   {shown}", file.users.len());
    }
    let in_manifests: i64 = manifests.iter().map(|m| m.users).sum();
    println!("   {} grants, {} of them in manifest files", grants.len(), in_manifests);
    let entitlements =
        store.list_entitlements(&crate::store::EntitlementFilter { limit: Some(10_000), ..Default::default() }).await?;
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entitlements {
        let fulfilled = e.fulfillment.as_deref().unwrap_or("not fulfilled");
        *by_outcome.entry(format!("{} ({fulfilled})", e.status)).or_default() += 1;
    }
    println!(
        "   EventSub: {} notifications with {} entitlements sent ({} redelivered, {} duplicates), {} stored once each:",
        report.eventsub.notifications,
        report.eventsub.entitlements,
        report.eventsub.redeliveries,
        report.eventsub.duplicate_entitlements,
        entitlements.len()
    );
    for (outcome, n) in &by_outcome {
        println!("     {outcome:<36} {n:>5}");
    }
    for e in entitlements.iter().filter(|e| e.status == "refused").take(3) {
        println!("     refused {} ({}): {}", e.entitlement_id, e.benefit_id, e.reason.as_deref().unwrap_or(""));
    }
    store.close().await;
    Ok(())
}
