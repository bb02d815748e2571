-- PKI (issue 5): the platform root CA, tenant CAs, device certificates,
-- revocation floors, device passwords, service credentials, ACL policies and
-- bring-your-own-CA registration codes. CA private keys are stored sealed
-- (AES-256-GCM under a key-encryption key kept outside the database).

-- The platform root: one row.
CREATE TABLE platform_ca (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    cert_pem    TEXT NOT NULL,
    sealed_key  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Tenant CAs: issued by the platform root, or registered by the tenant (who
-- keeps the key). Keyed by subject key identifier: devices' leaves find
-- their CA by it, and one CA belongs to one tenant.
CREATE TABLE tenant_cas (
    subject_key_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant_id      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('issued', 'registered')),
    cert_pem       TEXT NOT NULL,
    sealed_key     BYTEA,
    subject        TEXT NOT NULL,
    fingerprint    TEXT COLLATE "C" NOT NULL,
    not_after      TIMESTAMPTZ NOT NULL,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    -- The last CRL number handed out for this CA (CRL numbers only grow).
    crl_number     BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    -- The platform holds the key of every CA it issued, and of none it did not.
    CHECK ((kind = 'issued') = (sealed_key IS NOT NULL))
);

CREATE INDEX tenant_cas_tenant ON tenant_cas (tenant_id, created_at);

CREATE TABLE device_certificates (
    tenant_id         TEXT COLLATE "C" NOT NULL,
    device_id         TEXT COLLATE "C" NOT NULL,
    -- Lower-case hex without leading zero bytes.
    serial            TEXT COLLATE "C" NOT NULL,
    fingerprint       TEXT COLLATE "C" NOT NULL,
    issuer_key_id     TEXT COLLATE "C" NOT NULL,
    not_before        TIMESTAMPTZ NOT NULL,
    not_after         TIMESTAMPTZ NOT NULL,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    revoked_at        TIMESTAMPTZ,
    revocation_reason TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, serial),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

CREATE INDEX device_certificates_device ON device_certificates (tenant_id, device_id, created_at);
CREATE INDEX device_certificates_fingerprint ON device_certificates (fingerprint);

-- Bulk revocation: certificates issued before not_before are refused.
CREATE TABLE tenant_cert_floors (
    tenant_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    not_before TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE device_cert_floors (
    tenant_id  TEXT COLLATE "C" NOT NULL,
    device_id  TEXT COLLATE "C" NOT NULL,
    not_before TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

-- One password per device (MQTT username {device}@{tenant}).
CREATE TABLE device_passwords (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    device_id     TEXT COLLATE "C" NOT NULL,
    -- argon2id PHC string; hashing is the caller's.
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

-- MQTT credentials for a tenant's backends.
CREATE TABLE service_credentials (
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant_id         TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              TEXT COLLATE "C" NOT NULL,
    username          TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash     TEXT NOT NULL,
    -- JSON arrays of topic filters.
    publish_filters   JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(publish_filters) = 'array'),
    subscribe_filters JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(subscribe_filters) = 'array'),
    created_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

-- ACL policy templates per tenant.
CREATE TABLE acl_policies (
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    document   JSONB NOT NULL CHECK (jsonb_typeof(document) = 'object'),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Bring-your-own CA: codes handed out for proof of possession, single use.
CREATE TABLE ca_registration_codes (
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code       TEXT COLLATE "C" NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, code)
);
