-- The console charts grants per reward over the last hour (issue 15): an
-- index on the time they were stored keeps that a range scan.
CREATE INDEX grants_by_time ON grants (created_at);
