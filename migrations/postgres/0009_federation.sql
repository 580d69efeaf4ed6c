-- Federation relationships (POST /v1/federation): one row per foreign trust
-- domain, with where its bundle endpoint is, how it is authenticated, the last
-- good bundle and the poller's health record. Times are unix seconds unless
-- the column name says _ms.
--
-- bundle is the last good foreign bundle as a SPIFFE bundle document (the
-- bootstrap bundle until the first successful poll); it is replaced only by a
-- bundle with a higher spiffe_sequence (or the first one that has one) and
-- never by a failed poll. profile is https_spiffe (endpoint_spiffe_id set:
-- the endpoint's X.509-SVID is checked against bundle) or https_web (the web
-- PKI of [federation] web_roots_file). next_poll_ms = 0 asks for a poll now.
CREATE TABLE federation_relationships (
    trust_domain TEXT PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile TEXT NOT NULL,
    endpoint_spiffe_id TEXT,
    bundle TEXT,
    sequence BIGINT,
    refresh_hint BIGINT,
    bundle_updated_at BIGINT,
    last_attempt_at BIGINT,
    last_success_at BIGINT,
    last_error TEXT,
    failures BIGINT NOT NULL DEFAULT 0,
    next_poll_ms BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX federation_relationships_next_poll ON federation_relationships (next_poll_ms);
