-- Delivery of each manifest to Twitch (issue 11). A manifest's id and grants
-- are fixed when it is created; these columns only track the attempts to
-- upload it, so a retry or a restart re-sends the same id.
--   status: pending (file not yet written) -> written -> uploading -> uploaded,
--           or failed (a permanent refusal), or not_configured (no Twitch
--           credentials; becomes written when credentials appear).
ALTER TABLE manifests ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE manifests ADD COLUMN last_error TEXT;
ALTER TABLE manifests ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE manifests ADD COLUMN uploaded_at BIGINT;
ALTER TABLE manifests ADD COLUMN bytes BIGINT;
-- A manifest's file is streamed page by page in grant order
-- (`WHERE manifest_id = $1 AND id > $2 ORDER BY id`): without `id` in the
-- index every page would sort the whole manifest. (SQLite's index already
-- ends with the rowid, which is `id`.)
CREATE INDEX grants_by_manifest_id ON grants (manifest_id, id);
DROP INDEX grants_by_manifest;
