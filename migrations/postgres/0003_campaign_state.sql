-- Rules' per-campaign key-value state, as of the engine checkpoint.
CREATE TABLE campaign_state (
    campaign_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BYTEA NOT NULL,
    PRIMARY KEY (campaign_id, key)
);
