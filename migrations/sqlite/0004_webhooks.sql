-- Event stream and webhooks (GET /v1/events, /v1/webhooks). Events are audit
-- records; nothing here duplicates them. Times are unix seconds unless the
-- column name says _ms.

-- Registered receivers. The signing secret is sealed with the KEK
-- (AES-256-GCM, associated data names the webhook) and never returned after
-- creation. last_event_id is the delivery cursor: the audit seq of the last
-- event handled (delivered, or given up on); attempts and next_attempt_ms
-- describe the retries of the first matching event after it.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kinds TEXT NOT NULL,
    ca_pem TEXT,
    description TEXT,
    secret_sealed BLOB NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_event_id BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL DEFAULT 0
);

-- Every delivery attempt: outcome delivered, retrying or failed (given up),
-- the receiver's status code or an error text (never a secret). Pruned by at
-- (retention.keep_deliveries_seconds).
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);

-- Named leases among replicas (the webhook deliverer, the CA rotation schedule): taken and renewed with
-- conditional UPDATEs; expires_ms is unix milliseconds.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- Certificates already reported as expiring (audit action cert.expiring), so
-- each is reported once. Pruned with the certificates (by not_after).
CREATE TABLE cert_expiring (
    serial TEXT PRIMARY KEY,
    not_after BIGINT NOT NULL,
    reported_at BIGINT NOT NULL
);
CREATE INDEX cert_expiring_not_after ON cert_expiring (not_after);
