-- Tenants, devices and the audit log.
-- Timestamps: RFC 3339 UTC text with exactly 6 fractional digits, written by
-- the application, so that text order is time order.

CREATE TABLE tenants (
    id         TEXT NOT NULL PRIMARY KEY
               CHECK (length(id) BETWEEN 3 AND 63 AND id NOT GLOB '*[^a-z0-9-]*'),
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE TABLE devices (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         TEXT NOT NULL
               CHECK (length(id) BETWEEN 1 AND 128 AND id NOT GLOB '*[^A-Za-z0-9._-]*'),
    labels     TEXT NOT NULL DEFAULT '{}'
               CHECK (json_valid(labels) AND json_type(labels) = 'object'),
    attributes TEXT NOT NULL DEFAULT '{}'
               CHECK (json_valid(attributes) AND json_type(attributes) = 'object'),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- Lists page by (tenant_id, id): this key is unique and never changes,
    -- so keyset paging over it has no gaps or duplicates.
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE TABLE audit_log (
    -- AUTOINCREMENT: ids are never reused, even after old entries are pruned,
    -- so a paging cursor (the last id seen) stays meaningful.
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    -- No foreign key: the audit trail outlives the tenant it talks about.
    tenant_id  TEXT,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    request_id TEXT,
    details    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
) STRICT;

CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
