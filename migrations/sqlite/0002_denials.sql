-- Connections the sidecars' container firewall refused, reported in batches
-- (POST /v1/denials). `reporter` is the reporting sidecar's SPIFFE ID, taken
-- from its mTLS identity, never from the report. Pruned by `at`
-- (retention.keep_denials_seconds).
CREATE TABLE denials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    reporter TEXT NOT NULL,
    listener TEXT NOT NULL,
    peer_addr TEXT NOT NULL,
    peer_spiffe_id TEXT,
    reason TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
-- Listing is newest first (ORDER BY at DESC, id DESC); pruning is oldest `at` first.
CREATE INDEX denials_at ON denials (at);
CREATE INDEX denials_reporter ON denials (reporter, at);
CREATE INDEX denials_peer_spiffe_id ON denials (peer_spiffe_id, at);
CREATE INDEX denials_reason ON denials (reason, at);
