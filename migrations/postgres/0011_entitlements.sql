-- Twitch Drops entitlements (EventSub), as the engine decided them, and
-- their way to the studio's sink and back to Twitch as FULFILLED (issue 13).
CREATE TABLE entitlements (
    entitlement_id    TEXT    PRIMARY KEY,
    campaign_id       TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    benefit_id        TEXT    NOT NULL,
    body              TEXT    NOT NULL,   -- the entitlement as Twitch sent it, JSON
    -- awaiting_link | unmatched | refused | deliver | failed (the rule's call failed: decided again later)
    status            TEXT    NOT NULL,
    account           TEXT,               -- the linked game account it was decided for
    items             TEXT,               -- JSON [{id, quantity}] when status = 'deliver'
    reason            TEXT,               -- why it was refused or unmatched
    first_seq         BIGINT  NOT NULL,   -- the inbox event that brought it
    decided_seq       BIGINT  NOT NULL,   -- the inbox event that decided it
    campaign_revision TEXT    NOT NULL DEFAULT '',
    plugin_hash       TEXT    NOT NULL DEFAULT '',
    created_at        BIGINT  NOT NULL,   -- first stored (ms)
    decided_at        BIGINT  NOT NULL,
    delivered_at      BIGINT,             -- when the studio's sink confirmed the items
    -- NULL until Twitch answered for it: fulfilled | invalid_id | not_found | unauthorized
    fulfillment       TEXT,
    fulfil_attempts   BIGINT  NOT NULL DEFAULT 0,
    fulfil_after      BIGINT  NOT NULL DEFAULT 0,
    fulfil_error      TEXT,
    fulfilled_at      BIGINT
);
CREATE INDEX entitlements_awaiting ON entitlements (user_id) WHERE status IN ('awaiting_link', 'failed');
CREATE INDEX entitlements_to_deliver ON entitlements (decided_seq) WHERE status = 'deliver' AND delivered_at IS NULL;
CREATE INDEX entitlements_to_fulfil ON entitlements (fulfil_after)
    WHERE delivered_at IS NOT NULL AND fulfillment IS NULL;
