-- Publish rate limits (issue 5): a tenant's default for its devices and a
-- per-device override. A row replaces the less specific one as a whole
-- (device, else tenant, else the platform default from serve config); a
-- NULL rate means that dimension is not limited.

CREATE TABLE tenant_publish_limits (
    tenant_id           TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    messages_per_second BIGINT CHECK (messages_per_second > 0),
    messages_burst      BIGINT CHECK (messages_burst > 0),
    bytes_per_second    BIGINT CHECK (bytes_per_second > 0),
    bytes_burst         BIGINT CHECK (bytes_burst > 0),
    updated_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE device_publish_limits (
    tenant_id           TEXT COLLATE "C" NOT NULL,
    device_id           TEXT COLLATE "C" NOT NULL,
    messages_per_second BIGINT CHECK (messages_per_second > 0),
    messages_burst      BIGINT CHECK (messages_burst > 0),
    bytes_per_second    BIGINT CHECK (bytes_per_second > 0),
    bytes_burst         BIGINT CHECK (bytes_burst > 0),
    updated_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
