//! The `drops-host` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::RunningHost;
use crate::config::Settings;
use crate::telemetry::{self, LogFormat};

/// Rewards Twitch viewers: ingests VHS heartbeats, runs WebAssembly reward
/// rules per campaign, and writes Twitch entitlement manifests.
#[derive(Debug, Parser)]
#[command(name = "drops-host", version, about, long_about = None)]
pub struct Cli {
    /// Log line format (levels come from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DROPS_HOST_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (VHS and E2 ingest, admin API, metrics) and run the engine and manifest batcher.
    ///
    /// Settings come from the config file, then DROPS_HOST_* environment variables
    /// (nested keys with a double underscore: DROPS_HOST_VHS__TOKEN). Without a
    /// config: 127.0.0.1:8080, data in ./data, SQLite at data/drops-host.db,
    /// rules in ./rules. Stops cleanly on SIGINT or SIGTERM.
    Serve {
        /// Config file (default: ./drops-host.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit (serve applies them too).
    Migrate {
        /// Config file (default: ./drops-host.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The EventSub subscription that brings today's Twitch Drops
    /// (`drop.entitlement.grant`) to this host's POST /eventsub, under the
    /// `[twitch]` app credentials and `eventsub.secret` of the config.
    #[command(subcommand)]
    Eventsub(EventsubCommand),
    /// Dry run: feed recorded events (JSON lines, as `record_events` writes
    /// them) through the rules in memory and print the grants each campaign
    /// would make; compare them with a live host (--diff-against) or with a
    /// candidate plugin or campaign file (--candidate).
    ///
    /// Give the host's --config so the replay uses its plugin limits, circuit
    /// breaker and watching window, and decides as the host did. Exits
    /// non-zero when a rules file fails to load, the folder holds no
    /// campaign, or --diff-against finds differences.
    Replay(crate::replay::ReplayArgs),
    /// Campaign tools for development.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Send Twitch-like VHS traffic and, with --e2-token, game-server E2 traffic to a host, for demos and load tests.
    Simulate(Box<crate::simulate::SimulateArgs>),
    /// Run the demo: a host with the example campaigns, fed by simulated Twitch traffic.
    Demo(crate::demo::DemoArgs),
    /// Measure how long a host takes to acknowledge heartbeats sent one at a
    /// time (as Twitch sends them), beside the fdatasync and HTTP floors.
    AckLatency(crate::simulate::ack_latency::AckLatencyArgs),
    /// Serve a local stand-in for Twitch's upload path (app tokens, upload
    /// URLs, the files' PUTs), for demos and the upload benchmark: point
    /// `[twitch] auth_base_url` and `api_base_url` at it. Prints what it took
    /// every few seconds; stops on SIGINT or SIGTERM.
    TwitchStandIn {
        /// Address to listen on (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

/// EventSub subscription management.
#[derive(Debug, Subcommand)]
pub enum EventsubCommand {
    /// Create the subscription; Twitch then verifies the callback (a running host answers its challenge).
    Subscribe {
        /// Config file (default: ./drops-host.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The public https URL of the host's /eventsub.
        #[arg(long)]
        callback: String,
        /// The Drops organization (required by Twitch).
        #[arg(long)]
        organization_id: String,
        /// Only entitlements of this game (category).
        #[arg(long)]
        category_id: Option<String>,
        /// Only entitlements of this Drops campaign.
        #[arg(long)]
        campaign_id: Option<String>,
    },
    /// List the application's drop.entitlement.grant subscriptions.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete a subscription by id.
    Delete {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The subscription id (from `list`).
        id: String,
    },
}

/// Campaign tools for development.
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Delete a development campaign's grants, watch-time and rules' state,
    /// to test a changed rule from scratch. Refused unless the config sets
    /// `admin.allow_campaign_reset = true`, and while a host serves the
    /// database (stop it first: the engine would write its memory back).
    Reset {
        /// The campaign id (the `id` of its file).
        id: String,
        /// Config file (default: ./drops-host.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The languages a rule is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with drops-plugin-sdk.
    Rust,
    /// TypeScript (AssemblyScript), with the TypeScript SDK.
    #[value(alias = "typescript")]
    Ts,
}

/// Plugin tools.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin NAME that builds: a Rust crate (a rule, its config
    /// type, a native test) or, with `--lang ts`, a TypeScript package
    /// (AssemblyScript: `npm install && npm run build`, `npm test`); either
    /// with a test case for `plugin test`.
    New {
        /// Crate and plugin name: lowercase letters, digits and dashes.
        name: String,
        /// Folder to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The language of the rule.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Path to the SDK (drops-plugin-sdk; plugin-sdk-ts with `--lang ts`);
        /// default: the copy this binary was built from, written beside the rule.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in DIR (a Cargo crate or a TypeScript package) and
    /// run each test case in DIR/tests/cases/*.json through it, in the
    /// host's sandbox: an event, the viewers' minutes and the rule state
    /// before it, and the verdict, grants and items expected. Prints a diff
    /// per failing case; exits non-zero if any fails.
    Test {
        /// The plugin's folder.
        dir: PathBuf,
        /// Test this build instead of building DIR.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// The cases' folder (default DIR/tests/cases).
        #[arg(long)]
        cases: Option<PathBuf>,
    },
    /// Run one event through a plugin in a fresh sandbox and print the
    /// verdict, the grants (viewer and reward ids), the plugin's log lines,
    /// the fuel it used and its time.
    ///
    /// The event (a file, or - for stdin) is a VHS heartbeat (as Twitch posts
    /// it, with `viewer_list`, and optionally `state_changed`: the minute
    /// since the Unix epoch of the broadcaster's last game-state change), a game-state change
    /// (`{"game_state": {"broadcaster", "previous"?, "current", "authoritative"?},
    /// "viewers": [...]}`) or an entitlement (`{"entitlement": {EventSub
    /// data}, "account": "..."}`).
    Run {
        /// The plugin (.wasm).
        file: PathBuf,
        /// The campaign file (TOML) the plugin decides for.
        #[arg(long)]
        campaign: PathBuf,
        /// The event (JSON); - reads stdin.
        #[arg(long)]
        event: PathBuf,
        /// Viewers' campaign watch-time before the event: VIEWER=MINUTES, comma-separated (default 0).
        #[arg(long, value_delimiter = ',')]
        minutes: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a plugin crate whenever its sources change (with its `plugin`
    /// size profile when it has one), check each build against the campaigns
    /// that use it, and install it: into a rules folder a host watches
    /// (--rules), or on a running host through its admin API (--host).
    Watch {
        /// The plugin's folder: a Cargo crate or a TypeScript package.
        crate_dir: PathBuf,
        /// Install into this rules folder (plugins/NAME.wasm, checked against campaigns/*.toml).
        #[arg(long, conflicts_with = "host", required_unless_present = "host")]
        rules: Option<PathBuf>,
        /// Upload to this host (PUT /v1/plugins/NAME), which checks it against its campaigns.
        #[arg(long, requires = "admin_token")]
        host: Option<String>,
        /// The host's admin token, for --host.
        #[arg(long, env = "DROPS_HOST_ADMIN__TOKEN")]
        admin_token: Option<String>,
        /// Build, check and install once, then exit (non-zero if it was not installed).
        #[arg(long)]
        once: bool,
    },
    /// Load a plugin, check it implements the rules interface, and run its
    /// config check: against the campaign file that will go live
    /// (--campaign; an error names its file and line), or a config given as
    /// JSON with the campaign's rewards.
    Check {
        /// The plugin (.wasm module built with drops-plugin-sdk, or a component).
        file: PathBuf,
        /// The campaign file (TOML) whose `[rule] config` and rewards to check.
        #[arg(long, conflicts_with_all = ["config", "rewards"])]
        campaign: Option<PathBuf>,
        /// Campaign config as JSON (the `[rule] config` table).
        #[arg(long, default_value = "{}")]
        config: String,
        /// Reward ids of the campaign, comma-separated.
        #[arg(long, value_delimiter = ',')]
        rewards: Vec<String>,
    },
}

/// Parses arguments and runs the command; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            serve(settings).await?;
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            let store = crate::store::Store::connect(&settings.database_url()).await?;
            store.migrate().await?;
            println!("migrations applied to {}", crate::secrets::redact_url(&settings.database_url()));
        }
        Command::Plugin(PluginCommand::Watch { crate_dir, rules, host, admin_token, once }) => {
            let destination = match (rules, host, admin_token) {
                (Some(rules), _, _) => crate::plugin_watch::Destination::Rules(rules),
                (None, Some(url), Some(token)) => crate::plugin_watch::Destination::Host { url, token },
                _ => anyhow::bail!("plugin watch: give --rules DIR, or --host URL with --admin-token"),
            };
            return crate::plugin_watch::run(&crate_dir, destination, once).await;
        }
        Command::Plugin(PluginCommand::Run { file, campaign, event, minutes, json }) => {
            return crate::plugin_run::run(&file, &campaign, &event, &minutes, json);
        }
        Command::Plugin(PluginCommand::Check { file, campaign, config, rewards }) => {
            let checked = match &campaign {
                Some(path) => crate::plugin_check::CheckedConfig::CampaignFile(path),
                None => crate::plugin_check::CheckedConfig::Inline { config: &config, rewards },
            };
            return crate::plugin_check::run(&file, checked);
        }
        Command::Plugin(PluginCommand::New { name, dir, lang, sdk }) => {
            let root = match lang {
                Lang::Rust => crate::scaffold::new_plugin(&dir, &name, sdk)?,
                Lang::Ts => crate::scaffold::typescript::new_plugin(&dir, &name, sdk)?,
            };
            match lang {
                Lang::Rust => println!("created {}: `cargo test` runs its tests natively;", root.display()),
                Lang::Ts => println!(
                    "created {}: `npm install && npm run build` builds it, `npm test` runs its cases;",
                    root.display()
                ),
            }
            println!("{} says how to build, check, run, watch and install it.", root.join("README.md").display());
        }
        Command::Plugin(PluginCommand::Test { dir, plugin, cases }) => {
            return crate::plugin_test::run(&dir, plugin.as_deref(), cases.as_deref());
        }
        Command::Campaign(CampaignCommand::Reset { id, config }) => {
            let settings = Settings::load(config.as_deref())?;
            anyhow::ensure!(
                settings.admin.allow_campaign_reset,
                "campaign reset is for development campaigns: set admin.allow_campaign_reset = true in the config to allow it"
            );
            let store = crate::store::Store::connect(&settings.database_url()).await?;
            store.migrate().await?;
            let serving: Vec<String> = store
                .leases()
                .await?
                .into_iter()
                .filter(|l| l.name.starts_with("engine/") && l.holder.is_some() && l.expires_in_ms > 0)
                .map(|l| format!("{} held by {}", l.name, l.holder.unwrap_or_default()))
                .collect();
            anyhow::ensure!(
                serving.is_empty(),
                "a host is serving this database ({}): stop it first, or it would write the campaign's watch-time back",
                serving.join(", ")
            );
            let removed = store.reset_campaign(&id).await?;
            store.close().await;
            println!("campaign {id} reset: {removed} rows of grants, watch-time, rules' state and breaker removed");
        }
        Command::Replay(args) => return crate::replay::run(&args).await,
        Command::Simulate(args) => {
            let report = crate::simulate::run(&args).await?;
            if report.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Demo(args) => crate::demo::run(args).await?,
        Command::AckLatency(args) => {
            crate::simulate::ack_latency::run(&args).await?;
        }
        Command::TwitchStandIn { listen } => twitch_stand_in(listen).await?,
        Command::Eventsub(command) => eventsub(command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `drops-host eventsub ...`.
async fn eventsub(command: EventsubCommand) -> anyhow::Result<()> {
    use crate::delivery::eventsub::DropsSubscription;
    let config = match &command {
        EventsubCommand::Subscribe { config, .. }
        | EventsubCommand::List { config }
        | EventsubCommand::Delete { config, .. } => config.clone(),
    };
    let settings = Settings::load(config.as_deref())?;
    let client = crate::delivery::TwitchClient::new(&settings.twitch)?.ok_or_else(|| {
        anyhow::anyhow!("twitch.client_id and twitch.client_secret are needed (the app's credentials)")
    })?;
    match command {
        EventsubCommand::Subscribe { callback, organization_id, category_id, campaign_id, .. } => {
            let secret = settings
                .eventsub
                .secret
                .clone()
                .ok_or_else(|| anyhow::anyhow!("eventsub.secret is needed: Twitch signs every message with it"))?;
            let request = DropsSubscription { callback, secret, organization_id, category_id, campaign_id };
            let subscription = client.subscribe_drops(&request).await?;
            println!("subscription {} created: {}", subscription.id, subscription.status);
            println!("Twitch now sends a challenge to the callback; a host with this eventsub.secret answers it.");
        }
        EventsubCommand::List { .. } => {
            let subscriptions = client.drops_subscriptions().await?;
            if subscriptions.is_empty() {
                println!("no drop.entitlement.grant subscriptions");
            }
            for s in subscriptions {
                println!("{} {} {} v{} {} created {}", s.id, s.status, s.kind, s.version, s.condition, s.created_at);
            }
        }
        EventsubCommand::Delete { id, .. } => {
            client.delete_subscription(&id).await?;
            println!("subscription {id} deleted");
        }
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics();
    let host = RunningHost::start(settings, metrics).await?;
    // Tests and supervisors read this line to find the port.
    println!("drops-host listening on http://{}", host.addr);
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutdown requested");
            host.shutdown();
        }
        _ = host.stopping() => {}
    }
    host.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Serves the Twitch stand-in until SIGINT or SIGTERM, reporting what it took.
async fn twitch_stand_in(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let stand_in = crate::simulate::twitch_upload::start(listen).await?;
    println!("twitch stand-in listening on {}", stand_in.addr);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut last = (0, 0);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let now = stand_in.received.lock().map(|r| (r.puts, r.users())).unwrap_or_default();
        if now != last {
            println!("took {} PUTs: {} users", now.0, now.1);
            last = now;
        }
    }
    if let Ok(r) = stand_in.received.lock() {
        println!(
            "stopping; took {} PUTs: {} manifests, {} users, largest file {} bytes",
            r.puts,
            r.manifests.len(),
            r.users(),
            r.largest_bytes
        );
    }
    Ok(())
}
