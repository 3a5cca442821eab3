-- Campaigns paused by the circuit breaker, as of the engine checkpoint: the
-- events from paused_since_seq on are evaluated for them when they resume.
CREATE TABLE campaign_breakers (
    campaign_id       TEXT    PRIMARY KEY,
    paused_since_seq  BIGINT  NOT NULL,
    plugin_hash       TEXT    NOT NULL,
    campaign_revision TEXT    NOT NULL,
    reason            TEXT    NOT NULL
);
-- Viewer lists are dropped behind this position (held back while a campaign is paused).
ALTER TABLE engine_checkpoint ADD COLUMN pruned_seq BIGINT  NOT NULL DEFAULT 0;
