-- Account links registered by the studio: E2 names broadcasters by Twitch
-- user id, heartbeats and manifests by game account id.
CREATE TABLE account_links (
    twitch_user_id  TEXT    PRIMARY KEY,
    game_account_id TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL      -- unix milliseconds
);
CREATE INDEX account_links_by_account ON account_links (game_account_id);

-- Latest E2 game state per broadcaster (game account id), as of the engine checkpoint.
CREATE TABLE game_state (
    broadcaster_id TEXT    PRIMARY KEY,
    twitch_user_id TEXT    NOT NULL,
    state          TEXT    NOT NULL,      -- JSON
    changed_minute INTEGER NOT NULL   -- unix minute of the last change
);

-- The latest heartbeat per broadcaster, as of the engine checkpoint: who is
-- watching now. Its viewer list is kept in the inbox while it is referenced.
CREATE TABLE watchers (
    broadcaster_id TEXT    PRIMARY KEY,
    inbox_seq      INTEGER NOT NULL,
    minute         INTEGER NOT NULL
);
