-- The durable inbox, in its own SQLite file beside the main database, so that
-- acknowledging a heartbeat never waits for the engine's writes (SQLite has one
-- writer per file). An event is acknowledged only once it is here.
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,          -- 'vhs' or 'e2'
    dedup_key   TEXT    NOT NULL UNIQUE,   -- VHS report id: Twitch's retries share it
    header      TEXT    NOT NULL,          -- the event minus its viewers, JSON
    viewers     BLOB,                      -- '\n'-joined ids; NULL once checkpointed past
    received_at INTEGER NOT NULL           -- unix milliseconds
);

-- Pruning finds the rows that still hold viewers, and the game-state rows, without a scan.
CREATE INDEX inbox_holding_viewers ON inbox (seq) WHERE viewers IS NOT NULL;
CREATE INDEX inbox_game_state ON inbox (seq) WHERE source = 'e2';
