-- Pruning finds the rows that still hold viewers, and the game-state rows, without a scan.
CREATE INDEX inbox_holding_viewers ON inbox (seq) WHERE viewers IS NOT NULL;
CREATE INDEX inbox_game_state ON inbox (seq) WHERE source = 'e2';
