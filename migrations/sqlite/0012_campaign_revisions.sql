-- The text of every campaign file revision the host has served, beside the
-- plugin versions, so `replay --as-recorded` can judge recorded events by
-- the rules that were in force for them (issue 14).
CREATE TABLE campaign_revisions (
    revision      TEXT    PRIMARY KEY,     -- SHA-256 of the file
    campaign_id   TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    first_seen_at INTEGER NOT NULL
);
