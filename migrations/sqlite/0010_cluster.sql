-- Several hosts on one database (issue 12); on SQLite there is one host,
-- which takes every lease at start, so the same code runs everywhere.
-- See migrations/postgres/0010_cluster.sql for what each table is for.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT,
    epoch      INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE cluster_hosts (
    host_id    TEXT    PRIMARY KEY,
    listen     TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);

CREATE TABLE cluster_settings (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    engine_partitions INTEGER NOT NULL
);

-- One checkpoint per engine partition (SQLite cannot drop a CHECK: the table is rebuilt).
CREATE TABLE engine_checkpoint_by_part (
    id         INTEGER PRIMARY KEY,
    inbox_seq  INTEGER NOT NULL,
    taken_at   INTEGER NOT NULL,
    pruned_seq INTEGER NOT NULL DEFAULT 0
);
INSERT INTO engine_checkpoint_by_part (id, inbox_seq, taken_at, pruned_seq)
    SELECT 0, inbox_seq, taken_at, pruned_seq FROM engine_checkpoint;
DROP TABLE engine_checkpoint;
ALTER TABLE engine_checkpoint_by_part RENAME TO engine_checkpoint;

ALTER TABLE campaign_breakers ADD COLUMN part INTEGER NOT NULL DEFAULT 0;

CREATE TABLE game_state_by_part (
    part           INTEGER NOT NULL DEFAULT 0,
    broadcaster_id TEXT    NOT NULL,
    twitch_user_id TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    changed_minute INTEGER NOT NULL,
    PRIMARY KEY (part, broadcaster_id)
);
INSERT INTO game_state_by_part (part, broadcaster_id, twitch_user_id, state, changed_minute)
    SELECT 0, broadcaster_id, twitch_user_id, state, changed_minute FROM game_state;
DROP TABLE game_state;
ALTER TABLE game_state_by_part RENAME TO game_state;

CREATE TABLE watchers_by_part (
    part           INTEGER NOT NULL DEFAULT 0,
    broadcaster_id TEXT    NOT NULL,
    inbox_seq      INTEGER NOT NULL,
    minute         INTEGER NOT NULL,
    PRIMARY KEY (part, broadcaster_id)
);
INSERT INTO watchers_by_part (part, broadcaster_id, inbox_seq, minute)
    SELECT 0, broadcaster_id, inbox_seq, minute FROM watchers;
DROP TABLE watchers;
ALTER TABLE watchers_by_part RENAME TO watchers;
CREATE INDEX watchers_by_seq ON watchers (inbox_seq);

CREATE TABLE rule_files (
    path       TEXT    PRIMARY KEY,
    bytes      BLOB    NOT NULL,
    sha256     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL
);
CREATE TABLE rule_files_published (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    published_at INTEGER NOT NULL
);
