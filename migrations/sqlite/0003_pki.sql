-- PKI (issue 5): the platform root CA, tenant CAs, device certificates,
-- revocation floors, device passwords, service credentials, ACL policies and
-- bring-your-own-CA registration codes. CA private keys are stored sealed
-- (AES-256-GCM under a key-encryption key kept outside the database).

-- The platform root: one row.
CREATE TABLE platform_ca (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    cert_pem    TEXT NOT NULL,
    sealed_key  BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

-- Tenant CAs: issued by the platform root, or registered by the tenant (who
-- keeps the key). Keyed by subject key identifier: devices' leaves find
-- their CA by it, and one CA belongs to one tenant.
CREATE TABLE tenant_cas (
    subject_key_id TEXT NOT NULL PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('issued', 'registered')),
    cert_pem       TEXT NOT NULL,
    sealed_key     BLOB,
    subject        TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    not_after      TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    -- The last CRL number handed out for this CA (CRL numbers only grow).
    crl_number     INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    -- The platform holds the key of every CA it issued, and of none it did not.
    CHECK ((kind = 'issued') = (sealed_key IS NOT NULL))
) STRICT;

CREATE INDEX tenant_cas_tenant ON tenant_cas (tenant_id, created_at);

CREATE TABLE device_certificates (
    tenant_id         TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    -- Lower-case hex without leading zero bytes.
    serial            TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,
    issuer_key_id     TEXT NOT NULL,
    not_before        TEXT NOT NULL,
    not_after         TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    revoked_at        TEXT,
    revocation_reason TEXT,
    created_at        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, serial),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
) STRICT;

CREATE INDEX device_certificates_device ON device_certificates (tenant_id, device_id, created_at);
CREATE INDEX device_certificates_fingerprint ON device_certificates (fingerprint);

-- Bulk revocation: certificates issued before not_before are refused.
CREATE TABLE tenant_cert_floors (
    tenant_id  TEXT NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    not_before TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE device_cert_floors (
    tenant_id  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    not_before TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- One password per device (MQTT username {device}@{tenant}).
CREATE TABLE device_passwords (
    tenant_id     TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    -- argon2id PHC string; hashing is the caller's.
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- MQTT credentials for a tenant's backends.
CREATE TABLE service_credentials (
    id                TEXT NOT NULL PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    username          TEXT NOT NULL UNIQUE,
    password_hash     TEXT NOT NULL,
    -- JSON arrays of topic filters.
    publish_filters   TEXT NOT NULL DEFAULT '[]'
                      CHECK (json_valid(publish_filters) AND json_type(publish_filters) = 'array'),
    subscribe_filters TEXT NOT NULL DEFAULT '[]'
                      CHECK (json_valid(subscribe_filters) AND json_type(subscribe_filters) = 'array'),
    created_at        TEXT NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;

-- ACL policy templates per tenant.
CREATE TABLE acl_policies (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    document   TEXT NOT NULL CHECK (json_valid(document) AND json_type(document) = 'object'),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- Bring-your-own CA: codes handed out for proof of possession, single use.
CREATE TABLE ca_registration_codes (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code       TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, code)
) STRICT;
