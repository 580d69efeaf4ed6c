-- Tessera schema, PostgreSQL. Times are unix seconds (BIGINT); booleans are BIGINT 0/1.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE cas (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    cert_pem TEXT,
    upstream_chain_pem TEXT NOT NULL DEFAULT '',
    bundle_pem TEXT NOT NULL DEFAULT '',
    key_sealed BYTEA NOT NULL,
    not_before BIGINT NOT NULL DEFAULT 0,
    not_after BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    parent_id TEXT,
    ttl_seconds BIGINT NOT NULL,
    dns_names TEXT NOT NULL,
    note TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);

CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    selector TEXT NOT NULL,
    PRIMARY KEY (entry_id, selector)
);
CREATE INDEX entry_selectors_selector ON entry_selectors (selector);

CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL UNIQUE,
    attestation_type TEXT NOT NULL,
    banned BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    ca_id TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    attestation TEXT NOT NULL,
    attestation_hash TEXT NOT NULL,
    cert_der BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revocation_reason BIGINT
);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id);
CREATE INDEX certificates_entry_id ON certificates (entry_id);
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_attestation_hash ON certificates (attestation_hash);
-- Partial: new (unrevoked) rows cost this index nothing; the CRL reads only revoked rows.
CREATE INDEX certificates_revoked ON certificates (ca_id, revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE revocations (
    version BIGINT PRIMARY KEY,
    serial TEXT NOT NULL,
    spiffe_id TEXT NOT NULL,
    ca_id TEXT NOT NULL,
    reason BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE INDEX revocations_not_after ON revocations (not_after);

CREATE TABLE api_credentials (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    spiffe_id TEXT UNIQUE,
    token_hash TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
