-- The REST API's credentials and retries: JWT signing keys, first responses
-- kept for Idempotency-Key, and tenants' API keys.

CREATE TABLE signing_keys (
    -- The JWT header `kid`.
    kid         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- JWS algorithm name, e.g. ES256.
    algorithm   TEXT NOT NULL,
    -- Unencrypted PKCS#8 DER. Whoever reads this table can mint tokens:
    -- guard database access (and backups) accordingly.
    private_key BYTEA NOT NULL,
    -- What verifiers need (for ES256, the uncompressed SEC1 point).
    public_key  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    -- Set when a newer key took over signing; the key still verifies tokens
    -- it signed until they have all expired.
    retired_at  TIMESTAMPTZ
);

CREATE TABLE idempotency_keys (
    -- The tenant the request was about, '' for platform-level requests.
    scope        TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    -- Who sent the first request; someone else's retry is refused.
    actor        TEXT NOT NULL,
    -- SHA-256 (hex) of method, path and body of the first request.
    request_hash TEXT NOT NULL,
    -- NULL while the first request is in flight.
    status       INTEGER,
    content_type TEXT,
    body         BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- A tenant's API keys, exchanged for short-lived tokens at POST /v1/auth/token.
CREATE TABLE api_keys (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('tenant-admin', 'operator', 'viewer')),
    -- SHA-256 of the secret (high-entropy, so no slow hash is needed).
    secret_hash BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
