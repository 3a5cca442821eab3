//! The host side of the `host` interface: what a call's store holds and the
//! imports a plugin may use (log, viewer ids, its campaign's state).

use std::sync::Arc;

use super::limits::{CallLimits, HostBytesExceeded, ImportRefused, MAX_LOG_BYTES, MAX_LOG_LINES};
use super::state::{CampaignKv, Overlay, MAX_KEY_BYTES};
use super::wit::{host_interface, Level};
use crate::domain::ViewerList;

/// What one call's store holds.
pub struct CallState {
    pub(super) limits: CallLimits,
    viewers: Arc<ViewerList>,
    /// The call's viewers: handle `h` is `viewers[first + h]` for `h < count`
    /// (a large heartbeat is decided in several calls).
    first: usize,
    count: usize,
    /// The campaign's state, moved in for the call and back out after it.
    pub(super) state: CampaignKv,
    /// The call's writes, applied to `state` only if the call succeeds.
    pub(super) overlay: Overlay,
    plugin: Arc<str>,
    campaign: String,
    log_lines: u32,
    /// Bytes the plugin has sent the host in this call, and how many it may.
    host_bytes: u64,
    pub(super) host_budget: u64,
    max_campaign_state_bytes: usize,
    /// The call's log lines, kept when the runtime traces calls (`plugin run`).
    pub(super) logs: Option<Vec<String>>,
}

/// What bounds one call besides memory and CPU.
pub(super) struct CallBudget {
    /// Bytes the plugin may send the host, imports and answer together.
    pub host_bytes: u64,
    /// Bytes of state its campaign may hold.
    pub campaign_state_bytes: usize,
}

impl CallState {
    /// The state of a call of `plugin` for `campaign`, over a range of the event's `viewers`.
    pub(super) fn new(
        limits: CallLimits,
        budget: CallBudget,
        plugin: &str,
        campaign: &str,
        viewers: (Arc<ViewerList>, std::ops::Range<usize>),
        state: CampaignKv,
    ) -> CallState {
        let (viewers, range) = viewers;
        CallState {
            limits,
            viewers,
            first: range.start,
            count: range.len(),
            state,
            overlay: Overlay::default(),
            plugin: Arc::from(plugin),
            campaign: campaign.to_string(),
            log_lines: 0,
            host_bytes: 0,
            host_budget: budget.host_bytes,
            max_campaign_state_bytes: budget.campaign_state_bytes,
            logs: None,
        }
    }

    /// Counts `bytes` the plugin sent; past the budget the call fails.
    pub(super) fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.host_bytes = self.host_bytes.saturating_add(bytes as u64);
        if self.host_bytes > self.host_budget {
            return Err(wasmtime::Error::new(HostBytesExceeded { budget: self.host_budget }));
        }
        Ok(())
    }

    /// A state key the host refuses outright (it has no error channel to answer with).
    fn check_key(key: &str) -> wasmtime::Result<()> {
        if key.len() > MAX_KEY_BYTES {
            let message = format!("state key is {} bytes, more than {MAX_KEY_BYTES}", key.len());
            return Err(wasmtime::Error::new(ImportRefused(message)));
        }
        if key.chars().any(char::is_control) {
            return Err(wasmtime::Error::new(ImportRefused("state key contains control characters".into())));
        }
        Ok(())
    }
}

impl host_interface::Host for CallState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.charge(message.len())?;
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return Ok(());
        }
        // A plugin's line is one line of the host's log: no forged line breaks or escapes.
        let mut message: String = message.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if let Some(logs) = &mut self.logs {
            let level = match level {
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            logs.push(format!("{level}: {message}"));
        }
        let (plugin, campaign) = (&*self.plugin, &*self.campaign);
        match level {
            Level::Debug => tracing::debug!(plugin, campaign, "{message}"),
            Level::Info => tracing::info!(plugin, campaign, "{message}"),
            Level::Warn => tracing::warn!(plugin, campaign, "{message}"),
            Level::Error => tracing::error!(plugin, campaign, "{message}"),
        }
        Ok(())
    }

    fn viewer_id(&mut self, handle: u32) -> wasmtime::Result<Option<String>> {
        self.charge(4)?;
        let handle = handle as usize;
        Ok((handle < self.count).then(|| self.viewers.get(self.first + handle)).flatten().map(String::from))
    }

    fn state_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.charge(key.len())?;
        Self::check_key(&key)?;
        Ok(self.overlay.get(&self.state, &key))
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.charge(key.len() + value.len())?;
        Ok(self.overlay.set(&self.state, key, value, self.max_campaign_state_bytes))
    }

    fn state_delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.charge(key.len())?;
        Self::check_key(&key)?;
        self.overlay.delete(&self.state, key);
        Ok(())
    }
}
