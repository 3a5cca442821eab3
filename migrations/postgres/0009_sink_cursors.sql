-- Where each entitlement sink (the studio's webhook, a message broker) has
-- delivered up to: every grant with an id at or below `delivered_through`
-- was acknowledged by that sink. Grants are delivered in id order, one
-- batch at a time, so this one number is each grant's delivery state.
CREATE TABLE sink_cursors (
    sink              TEXT    PRIMARY KEY,
    delivered_through BIGINT  NOT NULL,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    last_error        TEXT,
    updated_at        BIGINT  NOT NULL
);
