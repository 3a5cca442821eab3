//! Starting and stopping the whole host: one place that starts every task and
//! one shutdown order (stop accepting, drain the engine, flush manifests).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use arc_swap::ArcSwap;
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Admin, AppState, Health};
use crate::config::Settings;
use crate::delivery::nats::NatsSink;
use crate::delivery::webhook::WebhookSink;
use crate::delivery::{sink, Backoff, TwitchClient, Uploader};
use crate::engine::{Engine, EngineOptions, PausedCampaigns};
use crate::health::Liveness;
use crate::http::{self, server::ServerLimits};
use crate::ingest::e2::E2Hub;
use crate::ingest::vhs::VhsIngest;
use crate::manifests::Batcher;
use crate::plugins::PluginRuntime;
use crate::rules::reload::{record_history, Reloader};
use crate::rules::RuleSet;
use crate::store::Store;

/// A running host.
pub struct RunningHost {
    /// The address the HTTP listener is bound to.
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningHost {
    /// Starts everything `serve` runs.
    pub async fn start(settings: Settings, metrics: Option<PrometheusHandle>) -> anyhow::Result<RunningHost> {
        // Settings built in code (the demo, tests) are held to the same ranges as a config file.
        settings.validate()?;
        let store = Arc::new(Store::connect_with(&settings.database_url(), settings.sqlite_synchronous).await?);
        store.migrate().await?;
        let runtime =
            Arc::new(PluginRuntime::new(settings.plugins.clone())?.with_cache(&settings.data_dir.join("plugin-cache")));
        let rules = {
            let (dir, runtime) = (settings.rules_dir.clone(), runtime.clone());
            tokio::task::spawn_blocking(move || RuleSet::load(&dir, &runtime)).await?
        };
        let rules = Arc::new(ArcSwap::from_pointee(rules));
        if settings.vhs.token.is_none() {
            tracing::warn!("vhs.token is not set: anyone who can reach /vhs can post heartbeats");
        }

        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let paused: Arc<PausedCampaigns> = Arc::new(ArcSwap::from_pointee(Default::default()));
        let reloader =
            Arc::new(Reloader::new(settings.rules_dir.clone(), runtime.clone(), rules.clone(), store.clone()));
        record_history(&store, &rules.load(), &runtime).await;
        let stop = CancellationToken::new();
        let liveness = Arc::new(Liveness::default());
        let e2 = Arc::new(E2Hub::new(settings.e2.clone(), store.clone(), liveness.clone(), stop.clone()));
        let state = AppState {
            vhs: Arc::new(VhsIngest::new(settings.vhs.clone(), store.clone(), liveness.clone())),
            e2: e2.clone(),
            admin: Arc::new(Admin {
                settings: settings.admin.clone(),
                store: store.clone(),
                rules: rules.clone(),
                reloader: reloader.clone(),
                paused: paused.clone(),
            }),
            health: Arc::new(Health { store: store.clone(), liveness: liveness.clone(), metrics: metrics.clone() }),
        };

        let (engine_stop, batcher_stop) = (CancellationToken::new(), CancellationToken::new());
        let options = EngineOptions::from_settings(&settings);
        let engine = Engine::new(store.clone(), rules.clone(), runtime.clone(), options, paused);
        let twitch = TwitchClient::new(&settings.twitch)?;
        if twitch.is_none() {
            tracing::warn!("twitch.client_id and twitch.client_secret are not set: manifests are written, not uploaded (not_configured)");
        }
        let batcher =
            Batcher::new(store.clone(), settings.manifest_dir(), settings.manifests.clone(), twitch.is_some());
        let engine_task = tokio::spawn(supervise_engine(engine, engine_stop.clone(), liveness, stop.clone()));
        let reload_stop = stop.clone();
        match reloader.watch() {
            Ok(watch) => {
                tokio::spawn(reloader.clone().run(watch, reload_stop));
            }
            Err(e) => tracing::error!("rules hot reload is off: cannot watch the rules directory: {e}"),
        }
        let batcher_task = tokio::spawn(batcher.run(batcher_stop.clone()));
        let sink_stop = CancellationToken::new();
        let mut sink_tasks = Vec::new();
        if let Some(webhook) = &settings.sink.webhook {
            let backoff = Backoff { initial_ms: webhook.retry_initial_ms, max_secs: webhook.retry_max_secs };
            let sink = WebhookSink::new(webhook)?;
            tracing::info!(url = %crate::secrets::redact_url(&webhook.url), "grants go to the webhook sink");
            sink_tasks.push(tokio::spawn(sink::run(sink, store.clone(), backoff, sink_stop.clone())));
        }
        if let Some(nats) = &settings.sink.nats {
            let backoff = Backoff { initial_ms: nats.retry_initial_ms, max_secs: nats.retry_max_secs };
            let sink = NatsSink::connect(nats).await?;
            tracing::info!(subject = %nats.subject, "grants go to the NATS JetStream sink");
            sink_tasks.push(tokio::spawn(sink::run(sink, store.clone(), backoff, sink_stop.clone())));
        }
        let uploader_stop = CancellationToken::new();
        let uploader_task = twitch.map(|client| {
            let uploader = Uploader::new(store.clone(), client, settings.twitch.clone());
            tokio::spawn(uploader.run(uploader_stop.clone()))
        });
        if let Some(handle) = metrics {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    handle.run_upkeep();
                }
            });
        }

        let limits = ServerLimits {
            header_timeout: Duration::from_secs(settings.http.header_timeout_secs),
            max_connections: settings.http.max_connections,
            shutdown_timeout: Duration::from_secs(settings.http.shutdown_timeout_secs),
        };
        let server = http::server::serve(listener, api::router(state), limits.clone(), stop.clone());
        let task_store = store.clone();
        let task = tokio::spawn(async move {
            server.await;
            // Game servers were told to reconnect; wait (boundedly) for their last messages to be stored.
            e2.tasks.close();
            if tokio::time::timeout(limits.shutdown_timeout, e2.tasks.wait()).await.is_err() {
                tracing::warn!(
                    "e2 connections still open after {:?}; shutting down without them",
                    limits.shutdown_timeout
                );
            }
            tracing::info!("HTTP stopped; draining the engine");
            engine_stop.cancel();
            let engine = engine_task.await;
            batcher_stop.cancel();
            let _ = batcher_task.await;
            // Uploads in flight are cut off: they go again, same manifest id, at the next start.
            uploader_stop.cancel();
            sink_stop.cancel();
            if let Some(uploader) = uploader_task {
                let _ = uploader.await;
            }
            for task in sink_tasks {
                let _ = task.await;
            }
            task_store.close().await;
            engine??;
            tracing::info!("shut down cleanly");
            Ok(())
        });
        tracing::info!(%addr, "drops-host serving");
        Ok(RunningHost { addr, store, rules, stop, task })
    }

    /// Resolves when a shutdown has started, asked for or not (the engine stopping starts one).
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Starts the ordered shutdown.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits for the host to stop.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Runs the engine. If it stops before it was asked to (a corrupt inbox row,
/// a panic), ingest must stop acknowledging what nobody will judge: the host
/// is marked stopped and shuts down, so the process exits non-zero after
/// draining and a supervisor restarts it.
async fn supervise_engine(
    engine: Engine,
    engine_stop: CancellationToken,
    liveness: Arc<Liveness>,
    host_stop: CancellationToken,
) -> anyhow::Result<()> {
    let outcome = match AssertUnwindSafe(engine.run(engine_stop.clone())).catch_unwind().await {
        Ok(Ok(())) if engine_stop.is_cancelled() => return Ok(()),
        Ok(Ok(())) => anyhow!("the engine returned before it was asked to stop"),
        Ok(Err(e)) => anyhow!(e).context("the engine stopped"),
        Err(_) => anyhow!("the engine panicked"),
    };
    metrics::counter!("drops_engine_stopped_total").increment(1);
    tracing::error!("{outcome:#}; refusing new events and shutting down");
    liveness.stop(format!("{outcome:#}"));
    host_stop.cancel();
    Err(outcome)
}
