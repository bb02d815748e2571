-- Platform service credentials (operators' backends that see every tenant,
-- each tenant's topics mounted under its id) and per-tenant topic hygiene
-- rules, both optional features of issue 5.

-- MQTT username `platform:{name}`: `:` is in no device id (so never read as
-- `{device}@{tenant}`) and `platform:` is not `service:` (tenant service
-- credentials), so the three kinds of user name never collide.
CREATE TABLE platform_service_credentials (
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL UNIQUE,
    username          TEXT COLLATE "C" NOT NULL UNIQUE CHECK (username = 'platform:' || name),
    password_hash     TEXT NOT NULL,
    -- JSON arrays of topic filters over the mounted topic space
    -- (`{tenant}/…`); empty: everything.
    publish_filters   JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(publish_filters) = 'array'),
    subscribe_filters JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(subscribe_filters) = 'array'),
    created_at        TIMESTAMPTZ NOT NULL
);

-- Topic hygiene per tenant; no row: no rules (the default).
CREATE TABLE tenant_topic_rules (
    tenant_id                   TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- Most levels a topic name or filter may have; NULL: no limit.
    max_depth                   INTEGER CHECK (max_depth IS NULL OR max_depth BETWEEN 1 AND 65535),
    forbid_leading_slash        BOOLEAN NOT NULL DEFAULT FALSE,
    forbid_spaces               BOOLEAN NOT NULL DEFAULT FALSE,
    -- Most live subscriptions to catch-all filters (`#`, `+/#`, `+/+/#`, …)
    -- in the tenant; NULL: no limit, 0: refused.
    max_catch_all_subscriptions INTEGER CHECK (max_catch_all_subscriptions IS NULL OR max_catch_all_subscriptions >= 0),
    updated_at                  TIMESTAMPTZ NOT NULL
);
