-- Several hosts on one database (issue 12).
--
-- Leases: who runs each piece of work that must have one owner at a time
-- (an engine partition, the manifest batcher and uploader, each sink).
-- `epoch` grows with every change of holder; writes that need the lease
-- check it in their own transaction (fencing), so a host that lost its
-- lease cannot overwrite its successor's work. Times are the database's
-- clock (unix ms), so hosts' clocks never have to agree.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT,
    epoch      BIGINT  NOT NULL DEFAULT 0,
    expires_at BIGINT  NOT NULL DEFAULT 0
);

-- Hosts that are up: each renews its row with its leases; the engine
-- partitions are shared among the hosts seen within a lease's lifetime.
CREATE TABLE cluster_hosts (
    host_id    TEXT    PRIMARY KEY,
    listen     TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    started_at BIGINT  NOT NULL,
    seen_at    BIGINT  NOT NULL
);

-- How many engine partitions the database's state is split into; fixed
-- when a host first uses the database.
CREATE TABLE cluster_settings (
    id                BIGINT PRIMARY KEY CHECK (id = 1),
    engine_partitions BIGINT NOT NULL
);

-- One checkpoint per engine partition: `id` is the partition (0 for a
-- database that had one engine).
ALTER TABLE engine_checkpoint DROP CONSTRAINT IF EXISTS engine_checkpoint_id_check;
UPDATE engine_checkpoint SET id = 0 WHERE id = 1;

-- Each partition keeps its own copy of what it derives from the shared
-- inbox per broadcaster (game state, the latest heartbeat), and its own
-- paused campaigns.
ALTER TABLE campaign_breakers ADD COLUMN part BIGINT NOT NULL DEFAULT 0;
ALTER TABLE game_state ADD COLUMN part BIGINT NOT NULL DEFAULT 0;
ALTER TABLE game_state DROP CONSTRAINT game_state_pkey;
ALTER TABLE game_state ADD PRIMARY KEY (part, broadcaster_id);
ALTER TABLE watchers ADD COLUMN part BIGINT NOT NULL DEFAULT 0;
ALTER TABLE watchers DROP CONSTRAINT watchers_pkey;
ALTER TABLE watchers ADD PRIMARY KEY (part, broadcaster_id);
CREATE INDEX watchers_by_seq ON watchers (inbox_seq);

-- The rules every host serves: campaign files and plugins, published by
-- the admin API of any host or from one host's rules directory, and
-- mirrored by every host into its own rules directory (NOTIFY drops_rules).
CREATE TABLE rule_files (
    path       TEXT    PRIMARY KEY,       -- 'campaigns/<name>.toml' or 'plugins/<name>.wasm'
    bytes      BYTEA   NOT NULL,
    sha256     TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    updated_by TEXT    NOT NULL
);
-- Set once rules were first published: until then a host that does not
-- publish keeps its own rules directory instead of mirroring an empty set.
CREATE TABLE rule_files_published (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    published_at BIGINT NOT NULL
);
