//! The event recording: what `serve` writes with `record_events` and what
//! `replay` reads, in one place so the two cannot drift. JSON lines:
//! heartbeats in the shape `/vhs` takes, game-state messages as
//! `{"game_state": ...}`. After a crash, events replayed from the checkpoint
//! are recorded again; readers skip repeated ids, as the host does.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::{Entitlement, Event, GameStateEvent, Heartbeat, InboxEvent, Linked};

/// How a game-state event is recorded: beside heartbeats, told apart by its key.
#[derive(Serialize, Deserialize)]
struct RecordedGameState<T> {
    game_state: T,
}

/// How an entitlement is recorded, with its arrival time (the inbox's).
#[derive(Serialize, Deserialize)]
struct RecordedEntitlement<T> {
    entitlement: T,
    received_at_ms: i64,
}

/// How a link event is recorded, with its arrival time (the inbox's).
#[derive(Serialize, Deserialize)]
struct RecordedLinked<T> {
    linked: T,
    received_at_ms: i64,
}

/// The note a host writes when it starts recording: what it judges under.
#[derive(Serialize, Deserialize)]
struct RecordedUnder<T> {
    recorded_under: T,
}

/// A campaign as it was in force: which revision of its file, with which plugin version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce {
    pub campaign_id: String,
    /// SHA-256 of the campaign file.
    pub revision: String,
    pub plugin: String,
    /// SHA-256 of the plugin.
    pub plugin_hash: String,
}

/// The note a host writes when the rules in force change.
#[derive(Serialize, Deserialize)]
struct RulesInForce<T> {
    rules_in_force: T,
}

/// A line of a recording.
#[derive(Debug)]
pub enum Line {
    /// An event.
    Event(Recorded),
    /// The events after this line were judged under this plugin runtime
    /// (wasmtime version and limits, as `PluginRuntime::fingerprint` says).
    RecordedUnder(String),
    /// The events after this line were judged by these campaigns, as they were.
    RulesInForce(Vec<InForce>),
}

/// Appends evaluated events to a recording.
pub struct Recorder {
    path: PathBuf,
    /// One batch, written with one `write_all` so a crash cuts at most its last line.
    out: Vec<u8>,
    file: std::fs::File,
}

impl Recorder {
    /// Opens (or creates) the recording for appending, and notes what the
    /// events that follow are judged under (`runtime`, the plugin runtime's
    /// fingerprint). A line cut short by a crash is ended first, so the next
    /// line starts on its own.
    pub fn open(path: &Path, runtime: &str) -> std::io::Result<Recorder> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        if file.seek(SeekFrom::End(0))? > 0 {
            file.seek(SeekFrom::End(-1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        let mut note = serde_json::to_vec(&RecordedUnder { recorded_under: runtime })?;
        note.push(b'\n');
        file.write_all(&note)?;
        Ok(Recorder { path: path.to_path_buf(), out: Vec::new(), file })
    }

    /// Notes the rules the events after it are judged by (written when they change).
    pub fn write_rules(&mut self, rules: &[InForce]) {
        let result = serde_json::to_vec(&RulesInForce { rules_in_force: rules })
            .map_err(std::io::Error::from)
            .and_then(|mut line| {
                line.push(b'\n');
                self.file.write_all(&line)
            });
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), "event recording failed: {e}");
        }
    }

    /// Appends events. Recording is a debugging aid: a failed write is
    /// logged and never stops grants.
    pub fn write(&mut self, events: &[InboxEvent]) {
        self.out.clear();
        let result = events
            .iter()
            .try_for_each(|e| {
                match &e.event {
                    Event::Heartbeat(hb) => serde_json::to_writer(&mut self.out, hb)?,
                    Event::GameState(gs) => {
                        serde_json::to_writer(&mut self.out, &RecordedGameState { game_state: gs })?
                    }
                    Event::Entitlement(entitlement) => serde_json::to_writer(
                        &mut self.out,
                        &RecordedEntitlement { entitlement, received_at_ms: e.received_at_ms },
                    )?,
                    Event::Linked(linked) => serde_json::to_writer(
                        &mut self.out,
                        &RecordedLinked { linked, received_at_ms: e.received_at_ms },
                    )?,
                }
                self.out.write_all(b"\n")?;
                Ok::<_, std::io::Error>(())
            })
            .and_then(|()| self.file.write_all(&self.out));
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), "event recording failed: {e}");
        }
    }
}

/// A recorded event as `replay` reads it.
#[derive(Debug)]
pub struct Recorded {
    /// The id the host deduplicates it by.
    pub dedup_id: String,
    /// When it arrived: recorded heartbeats keep no arrival time, so their own time stands in.
    pub received_at_ms: i64,
    pub event: Event,
}

/// Parses one recorded line; the error names the field.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let at = |e: serde_path_to_error::Error<serde_json::Error>| format!("{}: {}", e.path(), e.inner());
    let de = &mut serde_json::Deserializer::from_str(line);
    if line.trim_start().starts_with(r#"{"recorded_under""#) {
        let note: RecordedUnder<String> = serde_path_to_error::deserialize(de).map_err(at)?;
        return Ok(Line::RecordedUnder(note.recorded_under));
    }
    if line.trim_start().starts_with(r#"{"rules_in_force""#) {
        let note: RulesInForce<Vec<InForce>> = serde_path_to_error::deserialize(de).map_err(at)?;
        return Ok(Line::RulesInForce(note.rules_in_force));
    }
    parse_event(line).map(Line::Event)
}

fn parse_event(line: &str) -> Result<Recorded, String> {
    let at = |e: serde_path_to_error::Error<serde_json::Error>| format!("{}: {}", e.path(), e.inner());
    let de = &mut serde_json::Deserializer::from_str(line);
    if line.trim_start().starts_with(r#"{"entitlement""#) {
        let recorded: RecordedEntitlement<Entitlement> = serde_path_to_error::deserialize(de).map_err(at)?;
        let entitlement = recorded.entitlement;
        Ok(Recorded {
            dedup_id: format!("ent:{}", entitlement.entitlement_id),
            received_at_ms: recorded.received_at_ms,
            event: Event::Entitlement(Box::new(entitlement)),
        })
    } else if line.trim_start().starts_with(r#"{"linked""#) {
        let recorded: RecordedLinked<Linked> = serde_path_to_error::deserialize(de).map_err(at)?;
        let linked = recorded.linked;
        let ids: Vec<&str> = linked.entitlements.iter().map(|e| e.entitlement_id.as_str()).collect();
        Ok(Recorded {
            dedup_id: format!("link:{}:{}", linked.twitch_user_id, ids.join(",")),
            received_at_ms: recorded.received_at_ms,
            event: Event::Linked(Box::new(linked)),
        })
    } else if line.trim_start().starts_with(r#"{"game_state""#) {
        let recorded: RecordedGameState<GameStateEvent> = serde_path_to_error::deserialize(de).map_err(at)?;
        let gs = recorded.game_state;
        Ok(Recorded {
            dedup_id: format!("e2:{}", gs.id),
            received_at_ms: gs.received_at_ms,
            event: Event::GameState(gs),
        })
    } else {
        let hb: Heartbeat = serde_path_to_error::deserialize(de).map_err(at)?;
        Ok(Recorded { dedup_id: hb.id.0.clone(), received_at_ms: hb.time.unix_ms(), event: Event::Heartbeat(hb) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entitlement() -> Entitlement {
        Entitlement {
            entitlement_id: "ent-1".into(),
            event_id: "ev-1".into(),
            organization_id: "org".into(),
            category_id: "cat".into(),
            category_name: "Gäme 名".into(),
            campaign_id: "camp".into(),
            user_id: "u-1".into(),
            user_login: "viewer".into(),
            user_name: "Viewer".into(),
            benefit_id: "ben".into(),
            created_at: "2026-11-24T10:00:00Z".into(),
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let hb: Heartbeat = serde_json::from_str(
            r#"{"id":"h-1","broadcaster":"b-1","game":"G","time":"2026-11-23T10:00:00Z","viewer_list":["v-1"]}"#,
        )
        .unwrap();
        let gs: GameStateEvent = serde_json::from_value(serde_json::json!({"id": "c:1", "broadcasters": [],
            "client_id": "c", "game_id": "g", "update": "full", "data": {"level": 1},
            "received_at_ms": 5, "authoritative": true}))
        .unwrap();
        let linked =
            Linked {
                twitch_user_id: "u-1".into(), game_account_id: "acc-ü".into(), entitlements: vec![entitlement()]
            };
        let mut recorder = Recorder::open(&path, "wasmtime 1").unwrap();
        recorder.write(&[
            InboxEvent { seq: 1, received_at_ms: 9, event: Event::Heartbeat(hb.clone()) },
            InboxEvent { seq: 2, received_at_ms: 9, event: Event::GameState(gs.clone()) },
            InboxEvent { seq: 3, received_at_ms: 11, event: Event::Entitlement(Box::new(entitlement())) },
            InboxEvent { seq: 4, received_at_ms: 12, event: Event::Linked(Box::new(linked.clone())) },
        ]);
        drop(recorder);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines().map(|l| parse_line(l).unwrap());
        assert!(matches!(lines.next(), Some(Line::RecordedUnder(r)) if r == "wasmtime 1"));
        let lines: Vec<Recorded> = lines
            .map(|l| match l {
                Line::Event(e) => e,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(&lines[0].event, Event::Heartbeat(h) if *h == hb));
        assert_eq!(lines[0].dedup_id, "h-1");
        assert!(matches!(&lines[1].event, Event::GameState(g) if *g == gs));
        assert_eq!((lines[1].dedup_id.as_str(), lines[1].received_at_ms), ("e2:c:1", 5));
        assert!(matches!(&lines[2].event, Event::Entitlement(e) if **e == entitlement()));
        assert_eq!((lines[2].dedup_id.as_str(), lines[2].received_at_ms), ("ent:ent-1", 11));
        assert!(matches!(&lines[3].event, Event::Linked(l) if **l == linked));
        assert_eq!(lines[3].received_at_ms, 12);
        assert!(parse_line(r#"{"id":"h"}"#).unwrap_err().contains("broadcaster"));

        // A line cut short by a crash stays on its own line; the next event starts a fresh one.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"id\":").unwrap();
        let mut recorder = Recorder::open(&path, "wasmtime 1").unwrap();
        recorder.write(&[InboxEvent { seq: 3, received_at_ms: 9, event: Event::Heartbeat(hb.clone()) }]);
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Vec<&str> = text.lines().rev().take(3).collect();
        assert!(matches!(parse_line(last[0]), Ok(Line::Event(_))), "{text}");
        assert!(matches!(parse_line(last[1]), Ok(Line::RecordedUnder(_))), "{text}");
        assert!(parse_line(last[2]).is_err(), "{text}");
    }
}
