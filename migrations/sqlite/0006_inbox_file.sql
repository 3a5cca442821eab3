-- The inbox moved to its own file (migrations/sqlite-inbox); the host copied
-- its rows there before this ran.
DROP TABLE main.inbox;
