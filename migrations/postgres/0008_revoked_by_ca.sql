-- A certificate revoked by its CA generation's emergency revocation (and only
-- such a one) may re-issue once through POST /v1/certs/renew: a revocation an
-- operator made stays final even if the generation is revoked later.
ALTER TABLE certificates ADD COLUMN revoked_by_ca BIGINT NOT NULL DEFAULT 0;
-- Leaves revoked in the transaction that revoked their generation (same
-- time, reason cACompromise = 2) before this column existed.
UPDATE certificates SET revoked_by_ca = 1
 WHERE revocation_reason = 2 AND revoked_at IS NOT NULL
   AND EXISTS (SELECT 1 FROM cas WHERE cas.id = certificates.ca_id
               AND cas.state = 'revoked' AND cas.ended_at = certificates.revoked_at);
