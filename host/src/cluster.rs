//! Which host runs what, when several hosts share one database.
//!
//! Work that must have one owner at a time is a [`Role`]: each engine
//! partition, the manifest batcher with its uploader, each entitlement sink.
//! A role runs on the host that holds its lease (`store/cluster.rs`). Every
//! tick a host renews its leases and its row in `cluster_hosts`; it stops a
//! role whose lease another host took, takes free or expired leases, and
//! evens out engine partitions: with `n` hosts up each aims at
//! `ceil(partitions / n)`, so a host that joins gets partitions handed over
//! (checkpointed first) and a host that dies loses its leases when they
//! expire. A host alone on its database (`cluster.enabled = false`) takes
//! every lease at start, fencing off any earlier process of its own.
//!
//! Leases decide who runs a role; database constraints and fenced writes
//! keep the promises even when two hosts briefly both believe they hold
//! one (a paused process, a cut network): grants are unique by key, a
//! checkpoint commits only under the lease it was taken with.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{Fence, Store};

/// How a role's task ended.
#[derive(Debug)]
pub enum RoleEnd {
    /// Asked to stop or hand over, and did.
    Done,
    /// Its fenced write was refused: another host holds the lease now.
    LeaseLost,
    /// It cannot go on; the host must stop (the engine's corrupt row, a panic).
    Fatal(anyhow::Error),
}

/// What a role's task is given.
pub struct RoleRun {
    /// The lease it runs under (for fenced writes).
    pub fence: Fence,
    /// Drain and stop: the host is shutting down.
    pub stop: CancellationToken,
    /// Save progress and stop now: another host takes over.
    pub handover: CancellationToken,
}

type StartFn = dyn Fn(RoleRun) -> Pin<Box<dyn Future<Output = RoleEnd> + Send>> + Send + Sync;

/// Work that runs on one host at a time.
pub struct Role {
    /// The lease's name: `engine/<n>`, `manifests`, `sink/<name>`.
    pub name: String,
    /// Engine partitions are shared out evenly among hosts; other roles go
    /// to whichever host takes them first.
    pub even: bool,
    start: Box<StartFn>,
}

impl Role {
    /// A role whose task `start` makes.
    pub fn new<F, Fut>(name: impl Into<String>, even: bool, start: F) -> Role
    where
        F: Fn(RoleRun) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RoleEnd> + Send + 'static,
    {
        Role { name: name.into(), even, start: Box::new(move |run| Box::pin(start(run))) }
    }
}

/// A role running here.
struct Running {
    fence: Fence,
    stop: CancellationToken,
    handover: CancellationToken,
    task: JoinHandle<RoleEnd>,
}

/// A role told to stop, until its task has ended.
struct Stopping {
    name: String,
    role: Running,
    /// Free the lease once it has stopped (not when another host took it).
    release: bool,
}

/// The roles this host runs or is stopping.
#[derive(Default)]
struct Roles {
    running: BTreeMap<String, Running>,
    stopping: Vec<Stopping>,
}

impl Roles {
    /// Tells a running role to hand over; it is reaped by a later tick, so a
    /// slow checkpoint never holds up renewals.
    fn hand_over(&mut self, name: &str, release: bool) {
        if let Some(role) = self.running.remove(name) {
            role.handover.cancel();
            self.stopping.push(Stopping { name: name.to_string(), role, release });
        }
    }
}

/// This host's part in the cluster.
pub struct Cluster {
    store: Arc<Store>,
    /// This process's name in leases: the host id and a per-start suffix,
    /// so a restarted host never mistakes its predecessor's leases for its own.
    pub host: String,
    /// The host id, for `cluster_hosts`.
    host_id: String,
    listen: String,
    ttl_ms: u64,
    /// Alone on the database: take every lease, always.
    alone: bool,
    /// In shutdown order: engine partitions first (their grants feed the rest).
    roles: Vec<Role>,
}

impl Cluster {
    /// This host, with the roles it may run (in shutdown order).
    pub fn new(
        store: Arc<Store>,
        host_id: String,
        listen: String,
        ttl_ms: u64,
        alone: bool,
        roles: Vec<Role>,
    ) -> Cluster {
        let host = format!("{host_id}#{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Cluster { store, host, host_id, listen, ttl_ms, alone, roles }
    }

    /// How often leases are renewed: a third of their lifetime, so two
    /// renewals can fail before another host may take them.
    fn tick(&self) -> Duration {
        Duration::from_millis((self.ttl_ms / 3).max(100))
    }

    /// Runs roles until `stop`, then stops them in order, gives their leases
    /// back and leaves. `fatal` is told when a role cannot go on.
    pub async fn run(self, stop: CancellationToken, fatal: impl Fn(anyhow::Error)) {
        let mut roles = Roles::default();
        let mut renewed = Instant::now();
        while !stop.is_cancelled() {
            let asked = Instant::now();
            // A database that hangs must not hold the loop past the point
            // where this host has to stop its work on its own.
            let step = tokio::time::timeout(self.tick(), self.step(&mut roles, &fatal)).await;
            match step.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {:?}", self.tick()))) {
                Ok(()) => renewed = asked,
                Err(e) => {
                    tracing::warn!(host = %self.host, "cluster: cannot renew leases: {e}");
                    // Past two thirds of a lease's lifetime another host may
                    // soon take them: stop first (fenced writes would refuse
                    // this host anyway). Alone on its database, nobody can.
                    let expiring = renewed.elapsed() >= Duration::from_millis(self.ttl_ms * 2 / 3);
                    if expiring && !self.alone && !roles.running.is_empty() {
                        tracing::warn!(host = %self.host, roles = roles.running.len(), "cluster: leases may expire; stopping their work");
                        let names: Vec<String> = roles.running.keys().cloned().collect();
                        for name in names {
                            roles.hand_over(&name, true);
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick()) => {}
                _ = stop.cancelled() => {}
            }
        }
        self.leave(roles, &fatal).await;
    }

    /// Stops every role in order (engine partitions drain together, then the
    /// rest), renewing the leases meanwhile so nobody takes work still in
    /// progress, then frees them.
    async fn leave(&self, mut roles: Roles, fatal: &impl Fn(anyhow::Error)) {
        // Others stop counting this host at once, so they take its work as it is freed.
        if let Err(e) = self.store.host_leaving(&self.host_id).await {
            tracing::warn!(host = %self.host, "cluster: leaving: {e}");
        }
        let renewing = CancellationToken::new();
        let renewer = {
            let (store, host, ttl, tick, renewing) =
                (self.store.clone(), self.host.clone(), self.ttl_ms, self.tick(), renewing.clone());
            tokio::spawn(async move {
                while !renewing.is_cancelled() {
                    let _ = tokio::time::timeout(tick, store.renew_leases(&host, ttl)).await;
                    tokio::select! {
                        _ = tokio::time::sleep(tick) => {}
                        _ = renewing.cancelled() => {}
                    }
                }
            })
        };
        for even in [true, false] {
            let names: Vec<String> = self.roles.iter().filter(|r| r.even == even).map(|r| r.name.clone()).collect();
            let mut group = Vec::new();
            for name in names {
                if let Some(role) = roles.running.remove(&name) {
                    role.stop.cancel();
                    group.push((name, role));
                }
            }
            for (name, role) in group {
                let fence = role.fence.clone();
                self.finish(&name, role, fatal).await;
                let _ = self.store.release_lease(&fence).await;
            }
        }
        for stopping in std::mem::take(&mut roles.stopping) {
            self.finish(&stopping.name, stopping.role, fatal).await;
        }
        renewing.cancel();
        let _ = renewer.await;
        if let Err(e) = self.store.host_left(&self.host_id, &self.host).await {
            tracing::warn!(host = %self.host, "cluster: leaving: {e}; its leases expire instead");
        }
    }

    /// One tick: renew, reap, rebalance, take.
    async fn step(&self, roles: &mut Roles, fatal: &impl Fn(anyhow::Error)) -> anyhow::Result<()> {
        self.store.host_seen(&self.host_id, &self.listen).await?;
        let held: BTreeMap<String, i64> = self.store.renew_leases(&self.host, self.ttl_ms).await?.into_iter().collect();
        // Roles that finished stopping: report, and free the lease if it is still ours.
        let (done, still): (Vec<Stopping>, Vec<Stopping>) =
            std::mem::take(&mut roles.stopping).into_iter().partition(|s| s.role.task.is_finished());
        roles.stopping = still;
        for stopping in done {
            let fence = stopping.role.fence.clone();
            self.finish(&stopping.name, stopping.role, fatal).await;
            if stopping.release {
                self.store.release_lease(&fence).await?;
            }
        }
        // Held but run nowhere here (taken just before a timeout cut a tick short): give it back.
        for (name, epoch) in &held {
            if !roles.running.contains_key(name) && !roles.stopping.iter().any(|s| &s.name == name) {
                let fence = Fence { name: name.clone(), holder: self.host.clone(), epoch: *epoch };
                self.store.release_lease(&fence).await?;
            }
        }
        // Lost (taken over while this host was slow) or ended by themselves.
        let names: Vec<String> = roles.running.keys().cloned().collect();
        for name in names {
            let lost = held.get(&name) != roles.running.get(&name).map(|r| &r.fence.epoch);
            let ended = roles.running.get(&name).is_some_and(|r| r.task.is_finished());
            if lost {
                tracing::warn!(host = %self.host, role = %name, "cluster: lease taken over by another host; stopping");
                if self.alone {
                    tracing::error!(role = %name, "another process took this lease: several hosts on one database need cluster.enabled = true on each");
                }
                roles.hand_over(&name, false);
            } else if ended {
                roles.hand_over(&name, true);
            }
        }
        let hosts = if self.alone { 1 } else { self.store.live_hosts(self.ttl_ms).await?.len().max(1) };
        let even_total = self.roles.iter().filter(|r| r.even).count();
        let share = even_total.div_ceil(hosts);
        let even = |name: &String| self.role(name).is_some_and(|r| r.even);
        let mut even_held = roles.running.keys().filter(|n| even(n)).count();
        // Too many partitions here (a host joined): hand one over per tick.
        if even_held > share {
            if let Some(name) = roles.running.keys().rev().find(|n| even(n)).cloned() {
                tracing::info!(host = %self.host, role = %name, share, hosts, "cluster: handing over");
                roles.hand_over(&name, true);
                even_held -= 1;
            }
        }
        for role in &self.roles {
            let busy = roles.running.contains_key(&role.name) || roles.stopping.iter().any(|s| s.name == role.name);
            if busy || (role.even && even_held >= share) {
                continue;
            }
            let Some(epoch) = self.store.try_acquire_lease(&role.name, &self.host, self.ttl_ms, self.alone).await?
            else {
                continue;
            };
            let fence = Fence { name: role.name.clone(), holder: self.host.clone(), epoch };
            tracing::info!(host = %self.host, role = %role.name, epoch, "cluster: took the lease; starting");
            metrics::counter!("drops_cluster_leases_taken_total", "role" => role.name.clone()).increment(1);
            let (stop, handover) = (CancellationToken::new(), CancellationToken::new());
            let run = RoleRun { fence: fence.clone(), stop: stop.clone(), handover: handover.clone() };
            let task = tokio::spawn((role.start)(run));
            roles.running.insert(role.name.clone(), Running { fence, stop, handover, task });
            if role.even {
                even_held += 1;
            }
        }
        metrics::gauge!("drops_cluster_hosts").set(hosts as f64);
        metrics::gauge!("drops_cluster_roles_held").set(roles.running.len() as f64);
        Ok(())
    }

    fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// Waits for a stopping role's task and reports how it ended.
    async fn finish(&self, name: &str, role: Running, fatal: &impl Fn(anyhow::Error)) {
        let ended = role.task.await;
        // Ends the helper tasks that watch them (`cancel::either`).
        role.stop.cancel();
        role.handover.cancel();
        match ended {
            Ok(RoleEnd::Done) => tracing::info!(host = %self.host, role = %name, "cluster: role stopped"),
            Ok(RoleEnd::LeaseLost) => {
                tracing::warn!(host = %self.host, role = %name, "cluster: role stopped: its lease is held by another host")
            }
            Ok(RoleEnd::Fatal(e)) => fatal(e.context(format!("role {name}"))),
            Err(e) => fatal(anyhow::anyhow!("role {name} panicked: {e}")),
        }
    }
}
