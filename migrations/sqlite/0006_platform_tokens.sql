-- Platform-token (JWT) attestation.
-- A token's jti is single-use: it is recorded (per issuer, as SHA-256 hex)
-- in the transaction that issues the certificate it justified, and pruned
-- once the token has expired (expires_at = exp + the largest leeway).
CREATE TABLE jwt_jtis (
    issuer TEXT NOT NULL,
    jti_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti_hash)
);
CREATE INDEX jwt_jtis_expires ON jwt_jtis (expires_at);
-- The selectors a node attested with (JSON array; NULL for join-token nodes).
ALTER TABLE nodes ADD COLUMN selectors TEXT;
