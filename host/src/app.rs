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
use crate::cancel::either;
use crate::cluster::{Cluster, Role, RoleEnd, RoleRun};
use crate::config::Settings;
use crate::delivery::nats::NatsSink;
use crate::delivery::webhook::WebhookSink;
use crate::delivery::{fulfil, sink, Backoff, TwitchClient, Uploader};
use crate::engine::{link_sweep, Engine, EngineError, EngineOptions, PausedCampaigns};
use crate::health::Liveness;
use crate::http::{self, server::ServerLimits};
use crate::ingest::e2::E2Hub;
use crate::ingest::eventsub::EventSubIngest;
use crate::ingest::vhs::VhsIngest;
use crate::manifests::Batcher;
use crate::plugins::PluginRuntime;
use crate::rules::mirror::RulesMirror;
use crate::rules::reload::{record_history, Reloader};
use crate::rules::RuleSet;
use crate::store::{PartitionKey, Store, StoreError};

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
        // Dry runs cut short by a kill left their files; nothing in them is kept.
        let _ = std::fs::remove_dir_all(crate::replay::dry_runs_dir(&settings.data_dir));
        let runtime =
            Arc::new(PluginRuntime::new(settings.plugins.clone())?.with_cache(&settings.data_dir.join("plugin-cache")));
        let host_id = settings.cluster.host_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        // Several hosts serve the database's rules: bring the directory in step before loading it.
        let mirror = match settings.cluster.enabled {
            true => Some(Arc::new(
                RulesMirror::start(
                    store.clone(),
                    settings.rules_dir.clone(),
                    settings.data_dir.join("rules-mirror.json"),
                    host_id.clone(),
                    settings.cluster.publish_rules,
                )
                .await?,
            )),
            false => None,
        };
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
            eventsub: Arc::new(EventSubIngest {
                settings: settings.eventsub.clone(),
                store: store.clone(),
                liveness: liveness.clone(),
            }),
            admin: Arc::new(Admin {
                settings: settings.admin.clone(),
                store: store.clone(),
                rules: rules.clone(),
                reloader: reloader.clone(),
                paused: paused.clone(),
                lease_ttl_ms: settings.cluster.lease_ttl_ms,
                cluster: settings.cluster.enabled,
                twitch: TwitchClient::new(&settings.twitch)?.map(Arc::new),
                eventsub_secret: settings.eventsub.secret.clone(),
                host: Arc::new(settings.clone()),
                stop: stop.clone(),
                streams: Arc::new(tokio::sync::Semaphore::new(api::MAX_STREAMS)),
                replays: Arc::new(tokio::sync::Semaphore::new(1)),
                stream_cache: api::StreamCache::default(),
            }),
            health: Arc::new(Health { store: store.clone(), liveness: liveness.clone(), metrics: metrics.clone() }),
        };

        let options = EngineOptions::from_settings(&settings);
        let engine = Arc::new(Engine::new(store.clone(), rules.clone(), runtime.clone(), options, paused));
        let twitch = TwitchClient::new(&settings.twitch)?;
        if twitch.is_none() {
            tracing::warn!("twitch.client_id and twitch.client_secret are not set: manifests are written, not uploaded (not_configured)");
        }
        let partitions = store.engine_partitions(settings.cluster.engine_partitions).await?;
        let mut roles: Vec<Role> =
            (0..partitions).map(|index| engine_role(engine.clone(), index, partitions)).collect();
        roles.push(manifests_role(store.clone(), &settings));
        roles.push(fulfilment_role(store.clone(), rules.clone(), &settings));
        if settings.items_sink().is_none() {
            tracing::warn!("no [sink.webhook] or [sink.nats]: EventSub entitlements are decided but their items are not delivered (nor FULFILLED)");
        }
        if let Some(webhook) = &settings.sink.webhook {
            let backoff = Backoff { initial_ms: webhook.retry_initial_ms, max_secs: webhook.retry_max_secs };
            WebhookSink::new(webhook)?;
            tracing::info!(url = %crate::secrets::redact_url(&webhook.url), "grants go to the webhook sink");
            let (webhook, store) = (webhook.clone(), store.clone());
            let items = settings.items_sink() == Some("webhook");
            roles.push(Role::new("sink/webhook", false, move |run: RoleRun| {
                let (sink, store) = (WebhookSink::new(&webhook), store.clone());
                async move {
                    match sink {
                        Ok(sink) => sink::serve(sink, store, backoff, either(run.stop, run.handover), items).await,
                        Err(e) => return RoleEnd::Fatal(e.into()),
                    }
                    RoleEnd::Done
                }
            }));
        }
        if let Some(nats) = &settings.sink.nats {
            let backoff = Backoff { initial_ms: nats.retry_initial_ms, max_secs: nats.retry_max_secs };
            let sink = NatsSink::connect(nats).await?;
            tracing::info!(subject = %nats.subject, "grants go to the NATS JetStream sink");
            let store = store.clone();
            let items = settings.items_sink() == Some("nats");
            roles.push(Role::new("sink/nats", false, move |run: RoleRun| {
                let (sink, store) = (sink.clone(), store.clone());
                async move {
                    sink::serve(sink, store, backoff, either(run.stop, run.handover), items).await;
                    RoleEnd::Done
                }
            }));
        }
        let reload_stop = stop.clone();
        match reloader.watch() {
            Ok(watch) => {
                tokio::spawn(reloader.clone().run(watch, reload_stop));
            }
            Err(e) => tracing::error!("rules hot reload is off: cannot watch the rules directory: {e}"),
        }
        store.listen_to_other_hosts(stop.clone());
        if let Some(mirror) = mirror {
            let _ = reloader.mirror.set(mirror.clone());
            tokio::spawn(mirror.run(reloader.clone(), stop.clone()));
        }
        tracing::info!(host = %host_id, partitions, cluster = settings.cluster.enabled, "taking leases");
        let cluster = Cluster::new(
            store.clone(),
            host_id,
            addr.to_string(),
            settings.cluster.lease_ttl_ms,
            !settings.cluster.enabled,
            roles,
        );
        let cluster_stop = CancellationToken::new();
        let (fatal_liveness, fatal_stop) = (liveness.clone(), stop.clone());
        let cluster_task = tokio::spawn(cluster.run(cluster_stop.clone(), move |error: anyhow::Error| {
            // Ingest must stop acknowledging what nobody will judge: the host
            // is marked stopped and shuts down, so the process exits non-zero
            // after draining and a supervisor restarts it.
            metrics::counter!("drops_engine_stopped_total").increment(1);
            tracing::error!("{error:#}; refusing new events and shutting down");
            fatal_liveness.stop(format!("{error:#}"));
            fatal_stop.cancel();
        }));
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
        let (task_store, fatal) = (store.clone(), liveness.clone());
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
            tracing::info!("HTTP stopped; draining the engine, then flushing manifests and sinks");
            cluster_stop.cancel();
            let _ = cluster_task.await;
            task_store.close().await;
            if let Some(reason) = fatal.stopped() {
                return Err(anyhow!("stopped: {reason}"));
            }
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

/// The role of evaluating engine partition `index`.
fn engine_role(engine: Arc<Engine>, index: u32, count: u32) -> Role {
    Role::new(format!("engine/{index}"), true, move |run: RoleRun| {
        let engine = engine.clone();
        async move {
            let key = PartitionKey { index, count, fence: Some(run.fence) };
            let handover = run.handover.clone();
            let ran = AssertUnwindSafe(engine.run(key, run.stop, run.handover)).catch_unwind().await;
            match ran {
                Ok(Ok(())) => RoleEnd::Done,
                Ok(Err(EngineError::Store(StoreError::LeaseLost(_)))) => RoleEnd::LeaseLost,
                // Handing over while the database is away: the successor starts from the last checkpoint.
                Ok(Err(EngineError::Store(e))) if handover.is_cancelled() && !e.is_permanent() => {
                    tracing::warn!(partition = index, "engine partition handed over without a last checkpoint: {e}");
                    RoleEnd::Done
                }
                Ok(Err(e)) => RoleEnd::Fatal(anyhow!(e).context("the engine stopped")),
                Err(_) => RoleEnd::Fatal(anyhow!("the engine panicked")),
            }
        }
    })
}

/// The role of batching grants into manifests and uploading them: one host
/// does both, so a manifest's file is on the host that uploads it.
/// Keeps the EventSub path moving (with `eventsub.secret`): marks delivered
/// entitlements FULFILLED on Twitch, reconciles the CLAIMED ones the webhook
/// missed (both need `[twitch]` credentials), and sweeps open entitlements
/// of linked viewers into link events.
fn fulfilment_role(store: Arc<Store>, rules: Arc<ArcSwap<RuleSet>>, settings: &Settings) -> Role {
    let twitch = settings.twitch.clone();
    let backoff = Backoff { initial_ms: twitch.retry_initial_ms, max_secs: twitch.retry_max_secs };
    let eventsub = settings.eventsub.secret.is_some();
    let every = Duration::from_secs(settings.eventsub.reconcile_interval_secs);
    let sweep_every = Duration::from_secs(settings.eventsub.sweep_interval_secs);
    Role::new("fulfilment", false, move |run: RoleRun| {
        let client = TwitchClient::new(&twitch);
        let (store, rules) = (store.clone(), rules.clone());
        async move {
            let client = match client {
                Ok(client) => client.map(Arc::new),
                Err(e) => return RoleEnd::Fatal(e.into()),
            };
            let stop = either(run.stop, run.handover);
            let sweep = async {
                if eventsub {
                    link_sweep::run(store.clone(), rules.clone(), sweep_every, stop.clone()).await;
                }
            };
            let twitch = async {
                let Some(client) = client else {
                    return fulfil::report_backlog_until(store.clone(), stop.clone()).await;
                };
                let fulfil = fulfil::run_fulfilment(client.clone(), store.clone(), backoff, stop.clone());
                if eventsub && !every.is_zero() {
                    let reconcile =
                        fulfil::run_reconciliation(client, store.clone(), rules.clone(), every, stop.clone());
                    tokio::join!(fulfil, reconcile);
                } else {
                    fulfil.await;
                }
            };
            tokio::join!(sweep, twitch);
            RoleEnd::Done
        }
    })
}

fn manifests_role(store: Arc<Store>, settings: &Settings) -> Role {
    let (dir, manifests, twitch) = (settings.manifest_dir(), settings.manifests.clone(), settings.twitch.clone());
    Role::new("manifests", false, move |run: RoleRun| {
        let client = TwitchClient::new(&twitch);
        let batcher = Batcher::new(store.clone(), dir.clone(), manifests.clone(), matches!(client, Ok(Some(_))));
        let (store, twitch) = (store.clone(), twitch.clone());
        async move {
            let client = match client {
                Ok(client) => client,
                Err(e) => return RoleEnd::Fatal(e.into()),
            };
            let uploader_stop = CancellationToken::new();
            let uploader =
                client.map(|client| tokio::spawn(Uploader::new(store, client, twitch).run(uploader_stop.clone())));
            // A shutdown lets the batcher flush first; a handover stops it
            // where it is (as a crash would: the next holder rewrites a
            // pending manifest from the database), since the lease is gone.
            tokio::select! {
                _ = batcher.run(run.stop) => {}
                _ = run.handover.cancelled() => {}
            }
            // Uploads in flight are cut off: they go again, same manifest id, at the next start.
            uploader_stop.cancel();
            if let Some(uploader) = uploader {
                let _ = uploader.await;
            }
            RoleEnd::Done
        }
    })
}
