//! How events are stored in the inbox: a heartbeat as a JSON header beside
//! its viewer buffer (ids joined by `\n`, so ten million viewers cost one
//! blob, not ten million strings), a game-state message as one JSON header.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{Entitlement, EventTime, GameStateEvent, Heartbeat, Id, ViewerList};

/// What the inbox stores beside the viewer buffer: the heartbeat minus its viewers.
#[derive(Serialize, Deserialize)]
struct StoredHeader {
    id: Id,
    broadcaster: Id,
    broadcast_id: Option<u64>,
    viewers: u64,
    game: Id,
    version: u32,
    time: EventTime,
    retries: u32,
}

/// Splits a heartbeat into its stored header (JSON) and viewer buffer.
pub fn encode_heartbeat(hb: &Heartbeat) -> Result<(String, &[u8]), StoreError> {
    let header = StoredHeader {
        id: hb.id.clone(),
        broadcaster: hb.broadcaster.clone(),
        broadcast_id: hb.broadcast_id,
        viewers: hb.viewers,
        game: hb.game.clone(),
        version: hb.version,
        time: hb.time,
        retries: hb.retries,
    };
    let json = serde_json::to_string(&header).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok((json, hb.viewer_list.joined()))
}

/// Rebuilds a heartbeat from its stored form.
pub fn decode_heartbeat(header: &str, viewers: Vec<u8>) -> Result<Heartbeat, String> {
    let h: StoredHeader = serde_json::from_str(header).map_err(|e| e.to_string())?;
    Ok(Heartbeat {
        id: h.id,
        broadcaster: h.broadcaster,
        broadcast_id: h.broadcast_id,
        viewers: h.viewers,
        viewer_list: Arc::new(ViewerList::from_joined(viewers)?),
        game: h.game,
        version: h.version,
        time: h.time,
        retries: h.retries,
    })
}

/// A game-state message's stored form.
pub fn encode_game_state(event: &GameStateEvent) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Rebuilds a game-state message from its stored form.
pub fn decode_game_state(header: &str) -> Result<GameStateEvent, String> {
    serde_json::from_str(header).map_err(|e| format!("game state: {e}"))
}

/// An entitlement's stored form.
pub fn encode_entitlement(entitlement: &Entitlement) -> Result<String, StoreError> {
    serde_json::to_string(entitlement).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Rebuilds an entitlement from its stored form.
pub fn decode_entitlement(header: &str) -> Result<Entitlement, String> {
    serde_json::from_str(header).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_round_trip() {
        let hb: Heartbeat = serde_json::from_str(
            r#"{"broadcaster":"b-1","broadcast_id":27388295120,"viewers":6,"viewer_list":["v-0","v-1"],
                "game":"GameName","version":1,"id":"f0bacda2","time":"2026-11-23T15:04:05Z","retries":2}"#,
        )
        .unwrap();
        let (header, viewers) = encode_heartbeat(&hb).unwrap();
        assert_eq!(viewers, b"v-0\nv-1");
        assert_eq!(decode_heartbeat(&header, viewers.to_vec()).unwrap(), hb);
        assert!(decode_heartbeat("{", Vec::new()).is_err());
        assert!(decode_heartbeat(&header, vec![0xff]).is_err(), "not UTF-8");
    }
}
