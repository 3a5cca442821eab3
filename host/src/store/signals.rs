//! Wake-ups raised after commits: the engine waits for the inbox to grow,
//! the manifest batcher for grants to wait. The store raises them itself
//! once a write has committed, so no writer can forget to and no reader
//! wakes for a write it cannot see yet.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Notify};

/// The store's wake-ups.
#[derive(Debug)]
pub struct Signals {
    /// Counts inbox commits; each engine partition watches it.
    inbox: watch::Sender<u64>,
    rules: Notify,
    grants: Notify,
    grants_waiting: AtomicU64,
    manifests: Notify,
    sinks: Notify,
    items: Notify,
    delivered: Notify,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            inbox: watch::Sender::new(0),
            rules: Notify::new(),
            grants: Notify::new(),
            grants_waiting: AtomicU64::new(0),
            manifests: Notify::new(),
            sinks: Notify::new(),
            items: Notify::new(),
            delivered: Notify::new(),
        }
    }
}

impl Signals {
    /// Events were committed to the inbox.
    pub(super) fn inbox_grew(&self) {
        self.inbox.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later commit to the inbox (`changed()`);
    /// each engine partition holds its own.
    pub fn inbox_commits(&self) -> watch::Receiver<u64> {
        self.inbox.subscribe()
    }

    /// Rule files changed in the database (another host published them).
    pub(super) fn rules_published(&self) {
        self.rules.notify_one();
    }

    /// Waits until rule files are published by any host (or were since the last wait).
    pub async fn rules_changed(&self) {
        self.rules.notified().await
    }

    /// `n` new grants were committed.
    pub(super) fn grants_stored(&self, n: u64) {
        if n > 0 {
            self.grants_waiting.fetch_add(n, Ordering::Relaxed);
            self.grants.notify_one();
            self.sinks.notify_waiters();
        }
    }

    /// Waits until grants are committed (or were since the last wait).
    pub async fn grants_committed(&self) {
        self.grants.notified().await
    }

    /// Grants committed since the last [`Signals::take_grants_waiting`].
    pub fn grants_waiting(&self) -> u64 {
        self.grants_waiting.load(Ordering::Relaxed)
    }

    /// Waits until grants are committed, for the entitlement sinks (each
    /// sink waits here; all of them are woken).
    pub async fn grants_for_sinks(&self) {
        self.sinks.notified().await
    }

    /// Entitlements were decided with items to deliver.
    pub(super) fn items_decided(&self) {
        self.items.notify_one();
    }

    /// Waits until entitlements are decided with items (or were since the last wait).
    pub async fn items_to_deliver(&self) {
        self.items.notified().await
    }

    /// A sink confirmed items: their entitlements can be marked FULFILLED.
    pub(super) fn items_delivered(&self) {
        self.delivered.notify_one();
    }

    /// Waits until a sink confirms items (or did since the last wait).
    pub async fn items_confirmed(&self) {
        self.delivered.notified().await
    }

    /// A manifest file was written (or queued again) and can be uploaded.
    pub(super) fn manifest_written(&self) {
        self.manifests.notify_one();
    }

    /// Waits until a manifest is ready to upload (or was since the last wait).
    pub async fn manifest_ready(&self) {
        self.manifests.notified().await
    }

    /// Resets the count of waiting grants (the batcher is about to take them all).
    pub fn take_grants_waiting(&self) -> u64 {
        self.grants_waiting.swap(0, Ordering::Relaxed)
    }
}
