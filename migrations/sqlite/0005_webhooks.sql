-- Webhooks (issue 7): customers' endpoints, the outbox of events, and the
-- deliveries (one per HTTP request) with every attempt logged.

CREATE TABLE webhook_endpoints (
    id                   TEXT NOT NULL PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                  TEXT NOT NULL,
    -- JSON array of event type names; "*" matches every type.
    event_types          TEXT NOT NULL
                         CHECK (json_valid(event_types) AND json_type(event_types) = 'array'),
    -- MQTT topic filter for message events; NULL = every topic.
    topic_filter         TEXT,
    enabled              INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    -- Kept as-is (`whsec_` + base64), not hashed: signing needs the key
    -- itself. Guard the database file (and backups) like signing_keys.
    secret               TEXT NOT NULL,
    -- The secret before the last rotation; requests carry both signatures
    -- until it expires.
    previous_secret      TEXT,
    previous_secret_expires_at TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_reason      TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
) STRICT;

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

-- Events waiting to be fanned out to endpoints. Callers append inside the
-- transaction of the change that caused the event.
CREATE TABLE webhook_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL CHECK (json_valid(payload)),
    device_id     TEXT,
    -- The device's own counter, if the producer keeps one (for receivers).
    device_seq    INTEGER,
    -- For message events: the MQTT topic, matched against topic filters.
    topic         TEXT,
    created_at    TEXT NOT NULL,
    -- Set once the event has become deliveries.
    dispatched_at TEXT
) STRICT;

CREATE INDEX webhook_outbox_undispatched ON webhook_outbox (id) WHERE dispatched_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- The body's `type`: the event's, or "message.batch".
    event_type      TEXT NOT NULL,
    -- Deliveries with the same key go out one at a time, in id order (the
    -- device id; "#batch" for an endpoint's batches). NULL: no order.
    ordering_key    TEXT,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivering', 'delivered', 'failed')),
    -- A batch still taking messages (until it is full or claimed).
    batch_open      INTEGER NOT NULL DEFAULT 0 CHECK (batch_open IN (0, 1)),
    event_count     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- pending: when it is due; delivering: when the claim's lease runs out.
    next_attempt_at TEXT NOT NULL,
    last_status     INTEGER,
    last_latency_ms INTEGER,
    last_error      TEXT,
    last_response   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status, id);

-- Which events a delivery carries, in order (one, or a batch's messages).
CREATE TABLE webhook_delivery_events (
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    event_id    INTEGER NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    PRIMARY KEY (delivery_id, position)
) STRICT;

CREATE TABLE webhook_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at  TEXT NOT NULL,
    status_code   INTEGER,
    latency_ms    INTEGER NOT NULL,
    -- At most 1 KiB of the response body.
    response      TEXT,
    error         TEXT
) STRICT;

CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
