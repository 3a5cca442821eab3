-- Watch-time as compressed column segments instead of a row per
-- (campaign, viewer) (issue 24): a checkpoint writes the viewers that changed
-- as one blob per million of them, and now and then a campaign's whole state
-- (a base), after which the older segments go. A segment is written before
-- the checkpoint that names it commits, so `committed` stays 0 until that
-- checkpoint does: a crash or a fenced-out host leaves only uncommitted ones,
-- which nothing reads. The old `watch_time` rows are read once more at start
-- and dropped campaign by campaign as each one's first base commits.
CREATE TABLE watch_time_segments (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id TEXT    NOT NULL,
    row_count   BIGINT  NOT NULL,
    committed   INTEGER NOT NULL DEFAULT 0,
    data        BYTEA   NOT NULL
);
CREATE INDEX watch_time_segments_by_campaign ON watch_time_segments (campaign_id, id);

-- What the console shows of a campaign's viewers, written with each
-- checkpoint that changed them: no query walks a segment.
CREATE TABLE campaign_viewers (
    campaign_id TEXT    PRIMARY KEY,
    viewers     BIGINT  NOT NULL,
    minutes     BIGINT  NOT NULL,
    top         TEXT    NOT NULL          -- JSON: the longest-watching viewers, [{"viewer_id","minutes"}]
);
INSERT INTO campaign_viewers (campaign_id, viewers, minutes, top)
    SELECT campaign_id, COUNT(*), SUM(minutes), '[]' FROM watch_time GROUP BY campaign_id;
