//! Everything the engine keeps in memory between checkpoints, and the
//! settings that decide how events are judged.

use std::collections::HashMap;

use super::breaker::Breakers;
use super::broadcasters::Broadcasters;
use super::watch_time::WatchTime;
use crate::config::Settings;
use crate::plugins::CampaignKv;
use crate::store::Checkpoint;

/// The settings that decide how an event is judged, beyond the plugin
/// limits: `serve` and `replay` take them from the same configuration, so a
/// replay decides as the host it reproduces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Failed calls in a row that pause a campaign (its circuit breaker).
    pub breaker_failures: u32,
    /// A heartbeat that arrived at most this long before a game-state change says who watches.
    pub watching_window_ms: i64,
    /// Largest merged game state of a broadcaster (E2's full-state limit): a
    /// stream of small deltas must not grow it past what a connect may send.
    pub max_game_state_bytes: usize,
}

impl Judgement {
    /// What the settings say.
    pub fn from_settings(settings: &Settings) -> Judgement {
        Judgement {
            breaker_failures: settings.plugins.breaker_failures,
            watching_window_ms: i64::try_from(settings.e2.watching_window_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            max_game_state_bytes: settings.e2.max_full_bytes,
        }
    }
}

impl Default for Judgement {
    /// What the default settings say (the defaults live in `config`, once).
    fn default() -> Judgement {
        Judgement::from_settings(&Settings::default())
    }
}

/// Everything the engine keeps in memory between checkpoints.
#[derive(Debug)]
pub struct State {
    pub watch_time: WatchTime,
    /// Rules' key-value state, per campaign id.
    pub campaign_state: HashMap<String, CampaignKv>,
    /// Campaigns paused by failing plugins.
    pub breakers: Breakers,
    /// Game state and viewers per broadcaster.
    pub broadcasters: Broadcasters,
    /// The newest arrival time (host clock) of the events judged so far:
    /// "now" for pruning, the same on replay.
    pub latest_arrival_ms: i64,
    /// The engine partition this state is (index, count): which campaigns'
    /// entitlements it records, even those with no campaign loaded.
    pub partition: (u32, u32),
}

impl State {
    /// An empty state (nothing seen yet).
    pub fn new(judgement: &Judgement) -> State {
        State::restore(Checkpoint::default(), judgement)
    }

    /// Rebuilds the state from a checkpoint.
    pub fn restore(checkpoint: Checkpoint, judgement: &Judgement) -> State {
        let mut campaign_state: HashMap<String, CampaignKv> = HashMap::new();
        for (campaign, key, value) in checkpoint.campaign_state {
            campaign_state.entry(campaign).or_default().restore(key, value);
        }
        let mut breakers = Breakers::new(judgement.breaker_failures);
        for (campaign, paused) in checkpoint.breakers {
            breakers.restore(campaign, paused);
        }
        State {
            watch_time: WatchTime::restore(checkpoint.legacy_watch_time),
            campaign_state,
            breakers,
            broadcasters: Broadcasters::restore(
                judgement.watching_window_ms,
                judgement.max_game_state_bytes,
                checkpoint.game_state,
                checkpoint.watchers,
            ),
            latest_arrival_ms: 0,
            partition: (0, 1),
        }
    }

    /// Whether `campaign_id` is in this state's partition.
    pub fn owns(&self, campaign_id: &str) -> bool {
        let (index, count) = self.partition;
        count <= 1 || crate::domain::partition_of(campaign_id, count) == index
    }

    /// Changed rules' state: (campaign, key, value or None to delete).
    pub fn dirty_campaign_state(&self) -> Vec<(String, String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for (campaign, kv) in &self.campaign_state {
            for (key, value) in kv.dirty() {
                out.push((campaign.clone(), key.to_string(), value.map(<[u8]>::to_vec)));
            }
        }
        out
    }

    /// Forgets what changed besides watch-time (which its snapshot forgets),
    /// once a checkpoint has taken it.
    pub fn clear_dirty(&mut self) {
        self.broadcasters.clear_dirty();
        for kv in self.campaign_state.values_mut() {
            kv.clear_dirty();
        }
    }

    /// The campaign's key-value state, created empty on first use.
    pub(super) fn campaign_kv(&mut self, campaign_id: &str) -> &mut CampaignKv {
        self.campaign_state.entry(campaign_id.to_string()).or_default()
    }
}
