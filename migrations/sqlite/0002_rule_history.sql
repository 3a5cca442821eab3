-- Every plugin version the host has served, kept for rollback.
CREATE TABLE plugin_versions (
    hash          TEXT    PRIMARY KEY,     -- SHA-256 of the bytes
    name          TEXT    NOT NULL,
    bytes         BLOB    NOT NULL,
    size          INTEGER NOT NULL,
    first_seen_at INTEGER NOT NULL
);
CREATE INDEX plugin_versions_by_name ON plugin_versions (name, first_seen_at);

-- Which campaign revision ran with which plugin version, from when.
CREATE TABLE rule_history (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id       TEXT    NOT NULL,
    campaign_revision TEXT    NOT NULL,
    plugin_name       TEXT    NOT NULL,
    plugin_hash       TEXT    NOT NULL,
    activated_at      INTEGER NOT NULL
);
CREATE INDEX rule_history_by_campaign ON rule_history (campaign_id, id);
