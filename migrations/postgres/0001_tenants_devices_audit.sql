-- Tenants, devices and the audit log.
-- Ids use COLLATE "C" (byte order): keyset paging then orders exactly as on
-- SQLite, and comparisons stay cheap.

CREATE TABLE tenants (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY
               CHECK (id ~ '^[a-z0-9-]{3,63}$'),
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         TEXT COLLATE "C" NOT NULL
               CHECK (id ~ '^[A-Za-z0-9._-]{1,128}$'),
    labels     JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    attributes JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    enabled    BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    -- Lists page by (tenant_id, id): this key is unique and never changes,
    -- so keyset paging over it has no gaps or duplicates.
    PRIMARY KEY (tenant_id, id)
);

-- Label filters are containment queries (labels @> '{"k":"v"}').
CREATE INDEX devices_labels ON devices USING GIN (labels jsonb_path_ops);

CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    -- No foreign key: the audit trail outlives the tenant it talks about.
    tenant_id  TEXT COLLATE "C",
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT,
    details    JSONB NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
