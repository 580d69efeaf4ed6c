-- CA lifecycle: every generation moves prepared -> active -> retired -> removed
-- (or to revoked on key compromise). The times record when each transition
-- happened; activation requires prepared_at to be at least the configured
-- overlap in the past, so the bundle carrying a new CA reaches every follower
-- before any leaf is signed by it.
ALTER TABLE cas ADD COLUMN prepared_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cas ADD COLUMN activated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cas ADD COLUMN retired_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cas ADD COLUMN ended_at BIGINT NOT NULL DEFAULT 0;
-- Existing generations count as prepared and activated when they were created.
UPDATE cas SET prepared_at = created_at, activated_at = created_at WHERE state = 'active';
UPDATE cas SET prepared_at = created_at WHERE state = 'prepared';

-- "Leaves still depending on a CA" and revoking every leaf of a CA read by issuer.
CREATE INDEX certificates_ca_not_after ON certificates (ca_id, not_after);

-- JWT-SVID signing keys, one per CA generation (sealed like CA keys), created
-- when the generation is first published so the bundle's JWKS carries the key
-- before anything is signed with it; deleted when the generation leaves the
-- bundle (removed or revoked).
CREATE TABLE jwt_keys (
    ca_id TEXT PRIMARY KEY,
    kid TEXT NOT NULL,
    key_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
