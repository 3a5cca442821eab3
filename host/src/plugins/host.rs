//! The host side of the `host` interface: what a call's store holds and the
//! imports a plugin may use (log, viewer ids, its campaign's state).

use std::sync::Arc;

use super::limits::{CallLimits, MAX_LOG_BYTES, MAX_LOG_LINES};
use super::state::{CampaignKv, Overlay};
use super::wit::{host_interface, Level};
use crate::domain::ViewerList;

/// What one call's store holds.
pub struct CallState {
    pub(super) limits: CallLimits,
    viewers: Arc<ViewerList>,
    /// The campaign's state, moved in for the call and back out after it.
    pub(super) state: CampaignKv,
    /// The call's writes, applied to `state` only if the call succeeds.
    pub(super) overlay: Overlay,
    plugin: Arc<str>,
    campaign: String,
    log_lines: u32,
}

impl CallState {
    /// The state of a call of `plugin` for `campaign`, over the event's `viewers`.
    pub(super) fn new(
        limits: CallLimits,
        plugin: &str,
        campaign: &str,
        viewers: Arc<ViewerList>,
        state: CampaignKv,
    ) -> CallState {
        CallState {
            limits,
            viewers,
            state,
            overlay: Overlay::default(),
            plugin: Arc::from(plugin),
            campaign: campaign.to_string(),
            log_lines: 0,
        }
    }
}

impl host_interface::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, campaign) = (&*self.plugin, &*self.campaign);
        match level {
            Level::Debug => tracing::debug!(plugin, campaign, "{message}"),
            Level::Info => tracing::info!(plugin, campaign, "{message}"),
            Level::Warn => tracing::warn!(plugin, campaign, "{message}"),
            Level::Error => tracing::error!(plugin, campaign, "{message}"),
        }
    }

    fn viewer_id(&mut self, handle: u32) -> Option<String> {
        self.viewers.get(handle as usize).map(String::from)
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.overlay.get(&self.state, &key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.overlay.set(key, value)
    }

    fn state_delete(&mut self, key: String) {
        self.overlay.delete(key)
    }
}
