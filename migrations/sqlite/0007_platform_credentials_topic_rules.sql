-- Platform service credentials (operators' backends that see every tenant,
-- each tenant's topics mounted under its id) and per-tenant topic hygiene
-- rules, both optional features of issue 5.

-- MQTT username `platform:{name}`: `:` is in no device id (so never read as
-- `{device}@{tenant}`) and `platform:` is not `service:` (tenant service
-- credentials), so the three kinds of user name never collide.
CREATE TABLE platform_service_credentials (
    id                TEXT NOT NULL PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    username          TEXT NOT NULL UNIQUE CHECK (username = 'platform:' || name),
    password_hash     TEXT NOT NULL,
    -- JSON arrays of topic filters over the mounted topic space
    -- (`{tenant}/…`); empty: everything.
    publish_filters   TEXT NOT NULL DEFAULT '[]'
                      CHECK (json_valid(publish_filters) AND json_type(publish_filters) = 'array'),
    subscribe_filters TEXT NOT NULL DEFAULT '[]'
                      CHECK (json_valid(subscribe_filters) AND json_type(subscribe_filters) = 'array'),
    created_at        TEXT NOT NULL
) STRICT;

-- Topic hygiene per tenant; no row: no rules (the default).
CREATE TABLE tenant_topic_rules (
    tenant_id                   TEXT NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- Most levels a topic name or filter may have; NULL: no limit.
    max_depth                   INTEGER CHECK (max_depth IS NULL OR max_depth BETWEEN 1 AND 65535),
    forbid_leading_slash        INTEGER NOT NULL DEFAULT 0 CHECK (forbid_leading_slash IN (0, 1)),
    forbid_spaces               INTEGER NOT NULL DEFAULT 0 CHECK (forbid_spaces IN (0, 1)),
    -- Most live subscriptions to catch-all filters (`#`, `+/#`, `+/+/#`, …)
    -- in the tenant; NULL: no limit, 0: refused.
    max_catch_all_subscriptions INTEGER CHECK (max_catch_all_subscriptions IS NULL OR max_catch_all_subscriptions >= 0),
    updated_at                  TEXT NOT NULL
) STRICT;
