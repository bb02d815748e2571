-- Persistent MQTT sessions (issue 14): what a session that outlives its
-- connection holds, so that a restart or kill -9 loses nothing
-- acknowledged. Design: services/state/sessions.md.
-- Timestamps: RFC 3339 UTC text with exactly 6 fractional digits, written by
-- the application (see migrations/README.md).
--
-- Only persistent sessions (MQTT 3.1.1 clean session 0, MQTT 5 session
-- expiry above 0) are stored. A message body is written once
-- (mqtt_session_messages) and referenced by each session's queue row.

CREATE TABLE mqtt_sessions (
    -- Surrogate key: the children reference it (compact rows), and a clean
    -- start replaces the row (a new id), so nothing of the old session can
    -- attach to the new one.
    id               INTEGER PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id        TEXT NOT NULL CHECK (length(CAST(client_id AS BLOB)) BETWEEN 1 AND 1024),
    -- The principal that created the session; only it may resume it.
    owner            TEXT NOT NULL CHECK (length(CAST(owner AS BLOB)) BETWEEN 1 AND 1024),
    protocol         TEXT NOT NULL CHECK (protocol IN ('3.1.1', '5.0')),
    -- Session Expiry Interval in force, seconds (0xFFFFFFFF: never).
    expiry_interval  INTEGER NOT NULL CHECK (expiry_interval BETWEEN 0 AND 4294967295),
    -- Absolute deadline once offline (NULL while connected, or never), so
    -- that time spent with the broker down counts.
    expires_at       TEXT,
    connected        INTEGER NOT NULL CHECK (connected IN (0, 1)),
    -- The node serving (or last serving) the session: after a crash that
    -- node releases its connected sessions.
    node_id          TEXT,
    -- Bumped on every connect; a cluster fences writes with it.
    generation       INTEGER NOT NULL DEFAULT 1 CHECK (generation >= 1),
    connected_at     TEXT NOT NULL,
    disconnected_at  TEXT,
    -- The Last Will, stored at CONNECT so that a crash cannot swallow it.
    will_topic       TEXT CHECK (length(CAST(will_topic AS BLOB)) BETWEEN 1 AND 65535),
    will_payload     BLOB,
    will_qos         INTEGER CHECK (will_qos IN (0, 1, 2)),
    will_retain      INTEGER CHECK (will_retain IN (0, 1)),
    will_properties  TEXT CHECK (json_valid(will_properties) AND json_type(will_properties) = 'object'),
    will_delay       INTEGER CHECK (will_delay BETWEEN 0 AND 4294967295),
    -- When the will is due (offline, not resumed by then); NULL while
    -- connected.
    will_due_at      TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (tenant_id, client_id),
    CHECK ((will_topic IS NULL AND will_payload IS NULL AND will_qos IS NULL
            AND will_retain IS NULL AND will_properties IS NULL AND will_delay IS NULL
            AND will_due_at IS NULL)
        OR (will_topic IS NOT NULL AND will_payload IS NOT NULL AND will_qos IS NOT NULL
            AND will_retain IS NOT NULL AND will_properties IS NOT NULL
            AND will_delay IS NOT NULL))
) STRICT;

CREATE INDEX mqtt_sessions_expiry ON mqtt_sessions (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX mqtt_sessions_will_due ON mqtt_sessions (will_due_at) WHERE will_due_at IS NOT NULL;
CREATE INDEX mqtt_sessions_connected_by_node ON mqtt_sessions (node_id) WHERE connected = 1;
CREATE INDEX mqtt_sessions_owner ON mqtt_sessions (tenant_id, owner);

CREATE TABLE mqtt_session_subscriptions (
    session_id          INTEGER NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    -- SHA-256 of the filter (the Postgres schema needs a short key; the
    -- same here so that both backends behave alike).
    filter_key          BLOB NOT NULL CHECK (length(filter_key) = 32),
    filter              TEXT NOT NULL CHECK (length(CAST(filter AS BLOB)) BETWEEN 1 AND 65535),
    qos                 INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    no_local            INTEGER NOT NULL CHECK (no_local IN (0, 1)),
    retain_as_published INTEGER NOT NULL CHECK (retain_as_published IN (0, 1)),
    retain_handling     INTEGER NOT NULL CHECK (retain_handling IN (0, 1, 2)),
    subscription_id     INTEGER CHECK (subscription_id BETWEEN 1 AND 268435455),
    PRIMARY KEY (session_id, filter_key)
) STRICT, WITHOUT ROWID;

-- One row per message, however many sessions it is queued for.
CREATE TABLE mqtt_session_messages (
    -- A UUIDv7 chosen by the writer, so no round trip hands out ids.
    id         BLOB NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    topic      TEXT NOT NULL CHECK (length(CAST(topic AS BLOB)) BETWEEN 1 AND 65535),
    payload    BLOB NOT NULL,
    -- As published; only QoS 1/2 deliveries are stored.
    qos        INTEGER NOT NULL CHECK (qos IN (1, 2)),
    properties TEXT NOT NULL DEFAULT '{}'
               CHECK (json_valid(properties) AND json_type(properties) = 'object'),
    -- Absolute Message Expiry: time waiting counts, downtime included.
    expires_at TEXT,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX mqtt_session_messages_tenant ON mqtt_session_messages (tenant_id);
CREATE INDEX mqtt_session_messages_expiry ON mqtt_session_messages (expires_at)
    WHERE expires_at IS NOT NULL;

-- Outgoing QoS 1/2 deliveries, queued or in flight, in order per session.
CREATE TABLE mqtt_session_queue (
    session_id       INTEGER NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    -- The broker's per-session order.
    seq              INTEGER NOT NULL CHECK (seq >= 0),
    message_id       BLOB NOT NULL REFERENCES mqtt_session_messages (id),
    -- After the downgrade to the subscription's QoS.
    qos              INTEGER NOT NULL CHECK (qos IN (1, 2)),
    retain           INTEGER NOT NULL CHECK (retain IN (0, 1)),
    -- Matching Subscription Identifiers; NULL when none.
    subscription_ids TEXT CHECK (json_valid(subscription_ids) AND json_type(subscription_ids) = 'array'),
    -- The $share/ filter it came through, to give it to another member if
    -- this one leaves.
    shared_filter    TEXT,
    -- queued: not sent yet; sent: PUBLISH sent (resent with DUP), PUBACK
    -- or PUBREC awaited; released: PUBREL sent, PUBCOMP awaited.
    state            TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'released')),
    packet_id        INTEGER CHECK (packet_id BETWEEN 1 AND 65535),
    PRIMARY KEY (session_id, seq),
    CHECK ((state = 'queued') = (packet_id IS NULL)),
    CHECK (state <> 'released' OR qos = 2)
) STRICT, WITHOUT ROWID;

-- Garbage collection of bodies looks rows up by message.
CREATE INDEX mqtt_session_queue_message ON mqtt_session_queue (message_id);

-- Client → server QoS 2 packet ids whose PUBREL has not arrived: a resend
-- of one is acknowledged, not delivered twice.
CREATE TABLE mqtt_session_incoming (
    session_id INTEGER NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    packet_id  INTEGER NOT NULL CHECK (packet_id BETWEEN 1 AND 65535),
    PRIMARY KEY (session_id, packet_id)
) STRICT, WITHOUT ROWID;
