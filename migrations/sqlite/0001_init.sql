-- Durable inbox: an event is acknowledged only once it is here.
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,          -- 'vhs'
    dedup_key   TEXT    NOT NULL UNIQUE,   -- VHS report id: Twitch's retries share it
    header      TEXT    NOT NULL,          -- the event minus its viewers, JSON
    viewers     BLOB,                      -- '\n'-joined ids; NULL once checkpointed past
    received_at INTEGER NOT NULL           -- unix milliseconds
);

-- The engine's position in the inbox, committed with the watch-time it covers.
CREATE TABLE engine_checkpoint (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    inbox_seq INTEGER NOT NULL,
    taken_at  INTEGER NOT NULL
);

-- Per campaign and viewer watch-time, as of the checkpoint.
CREATE TABLE watch_time (
    campaign_id TEXT    NOT NULL,
    viewer_id   TEXT    NOT NULL,
    minutes     INTEGER NOT NULL,
    last_minute INTEGER NOT NULL,          -- newest unix minute counted
    recent_mask INTEGER NOT NULL,          -- bit i: minute last_minute - i was counted
    PRIMARY KEY (campaign_id, viewer_id)
);

CREATE TABLE grants (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id       TEXT    NOT NULL,
    reward_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    grant_key         TEXT    NOT NULL DEFAULT '',
    broadcaster_id    TEXT    NOT NULL,
    game              TEXT    NOT NULL,
    client_id         TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    campaign_revision TEXT    NOT NULL,
    plugin_hash       TEXT    NOT NULL,
    inbox_seq         INTEGER NOT NULL,
    event_minute      INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    manifest_id       TEXT,
    UNIQUE (campaign_id, reward_id, user_id, grant_key)
);
CREATE INDEX grants_unbatched ON grants (id) WHERE manifest_id IS NULL;
CREATE INDEX grants_by_manifest ON grants (manifest_id);

CREATE TABLE manifests (
    id             TEXT    PRIMARY KEY,
    campaign_id    TEXT    NOT NULL,
    client_id      TEXT    NOT NULL,
    game           TEXT    NOT NULL,
    broadcaster_id TEXT    NOT NULL,
    item_id        TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    users          INTEGER NOT NULL,
    status         TEXT    NOT NULL,       -- 'pending' until its file is written
    path           TEXT,
    created_at     INTEGER NOT NULL,
    written_at     INTEGER
);
CREATE INDEX manifests_pending ON manifests (status);
