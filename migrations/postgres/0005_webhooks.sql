-- Webhooks (issue 7): customers' endpoints, the outbox of events, and the
-- deliveries (one per HTTP request) with every attempt logged.

CREATE TABLE webhook_endpoints (
    id                   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant_id            TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                  TEXT NOT NULL,
    -- JSON array of event type names; "*" matches every type.
    event_types          JSONB NOT NULL CHECK (jsonb_typeof(event_types) = 'array'),
    -- MQTT topic filter for message events; NULL = every topic.
    topic_filter         TEXT,
    enabled              BOOLEAN NOT NULL,
    -- Kept as-is (`whsec_` + base64), not hashed: signing needs the key
    -- itself. Guard database access (and backups) like signing_keys.
    secret               TEXT NOT NULL,
    -- The secret before the last rotation; requests carry both signatures
    -- until it expires.
    previous_secret      TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_reason      TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

-- Events waiting to be fanned out to endpoints. Callers append inside the
-- transaction of the change that caused the event.
CREATE TABLE webhook_outbox (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_type    TEXT NOT NULL,
    payload       JSONB NOT NULL,
    device_id     TEXT COLLATE "C",
    -- The device's own counter, if the producer keeps one (for receivers).
    device_seq    BIGINT,
    -- For message events: the MQTT topic, matched against topic filters.
    topic         TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    -- Set once the event has become deliveries.
    dispatched_at TIMESTAMPTZ
);

CREATE INDEX webhook_outbox_undispatched ON webhook_outbox (id) WHERE dispatched_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id     TEXT COLLATE "C" NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- The body's `type`: the event's, or "message.batch".
    event_type      TEXT NOT NULL,
    -- Deliveries with the same key go out one at a time, in id order (the
    -- device id; "#batch" for an endpoint's batches). NULL: no order.
    ordering_key    TEXT COLLATE "C",
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    -- A batch still taking messages (until it is full or claimed).
    batch_open      BOOLEAN NOT NULL DEFAULT FALSE,
    event_count     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- pending: when it is due; delivering: when the claim's lease runs out.
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_status     INTEGER,
    last_latency_ms BIGINT,
    last_error      TEXT,
    last_response   TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status, id);

-- Which events a delivery carries, in order (one, or a batch's messages).
CREATE TABLE webhook_delivery_events (
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    event_id    BIGINT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    PRIMARY KEY (delivery_id, position)
);

CREATE TABLE webhook_attempts (
    id            BIGSERIAL PRIMARY KEY,
    delivery_id   BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at  TIMESTAMPTZ NOT NULL,
    status_code   INTEGER,
    latency_ms    BIGINT NOT NULL,
    -- At most 1 KiB of the response body.
    response      TEXT,
    error         TEXT
);

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
