-- The REST API's credentials and retries: JWT signing keys, first responses
-- kept for Idempotency-Key, and tenants' API keys.

CREATE TABLE signing_keys (
    -- The JWT header `kid`.
    kid         TEXT NOT NULL PRIMARY KEY,
    -- JWS algorithm name, e.g. ES256.
    algorithm   TEXT NOT NULL,
    -- Unencrypted PKCS#8 DER. Whoever reads this table can mint tokens:
    -- guard database access (and backups) accordingly.
    private_key BLOB NOT NULL,
    -- What verifiers need (for ES256, the uncompressed SEC1 point).
    public_key  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    -- Set when a newer key took over signing; the key still verifies tokens
    -- it signed until they have all expired.
    retired_at  TEXT
) STRICT;

CREATE TABLE idempotency_keys (
    -- The tenant the request was about, '' for platform-level requests.
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- Who sent the first request; someone else's retry is refused.
    actor        TEXT NOT NULL,
    -- SHA-256 (hex) of method, path and body of the first request.
    request_hash TEXT NOT NULL,
    -- NULL while the first request is in flight.
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- A tenant's API keys, exchanged for short-lived tokens at POST /v1/auth/token.
CREATE TABLE api_keys (
    id          TEXT NOT NULL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('tenant-admin', 'operator', 'viewer')),
    -- SHA-256 of the secret (high-entropy, so no slow hash is needed).
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
