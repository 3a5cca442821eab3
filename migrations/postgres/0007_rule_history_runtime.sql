-- What each activation was judged under besides the plugin and its config:
-- the wasmtime version (fuel counts) and the sandbox limits.
ALTER TABLE rule_history ADD COLUMN runtime TEXT NOT NULL DEFAULT '';
