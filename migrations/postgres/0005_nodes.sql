-- Node attestation. A node (a host running tessera-agent) is recorded when
-- it redeems a join token for a node entry (SPIFFE ID
-- spiffe://<td>/tessera/agent/<name>); `nodes.id` is <name>. Certificates
-- the CA issued through a node's agent (POST /v1/agent/svids) record that
-- node's SPIFFE ID, so banning the node revokes them all.
ALTER TABLE certificates ADD COLUMN node_spiffe_id TEXT;
-- Partial: certificates not issued through an agent cost this index nothing.
CREATE INDEX certificates_node ON certificates (node_spiffe_id, not_after) WHERE node_spiffe_id IS NOT NULL;
ALTER TABLE nodes ADD COLUMN banned_at BIGINT;
