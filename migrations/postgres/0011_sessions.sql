-- Persistent MQTT sessions (issue 14): what a session that outlives its
-- connection holds, so that a restart, kill -9 or (issue 15) the loss of
-- a node loses nothing acknowledged. Design: services/state/sessions.md.
--
-- Only persistent sessions (MQTT 3.1.1 clean session 0, MQTT 5 session
-- expiry above 0) are stored. A message body is written once
-- (mqtt_session_messages) and referenced by each session's queue row.

CREATE TABLE mqtt_sessions (
    -- Surrogate key: the children reference it (compact rows), and a clean
    -- start replaces the row (a new id), so nothing of the old session can
    -- attach to the new one.
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Bounded so that the unique index entry stays well inside a btree page.
    client_id        TEXT COLLATE "C" NOT NULL CHECK (octet_length(client_id) BETWEEN 1 AND 1024),
    -- The principal that created the session; only it may resume it.
    owner            TEXT COLLATE "C" NOT NULL CHECK (octet_length(owner) BETWEEN 1 AND 1024),
    protocol         TEXT NOT NULL CHECK (protocol IN ('3.1.1', '5.0')),
    -- Session Expiry Interval in force, seconds (0xFFFFFFFF: never).
    expiry_interval  BIGINT NOT NULL CHECK (expiry_interval BETWEEN 0 AND 4294967295),
    -- Absolute deadline once offline (NULL while connected, or never), so
    -- that time spent with the broker down counts.
    expires_at       TIMESTAMPTZ,
    connected        BOOLEAN NOT NULL,
    -- The node serving (or last serving) the session: after a crash that
    -- node (or, in a cluster, a survivor) releases its connected sessions.
    node_id          TEXT,
    -- Bumped on every connect; a cluster fences writes with it.
    generation       BIGINT NOT NULL DEFAULT 1 CHECK (generation >= 1),
    connected_at     TIMESTAMPTZ NOT NULL,
    disconnected_at  TIMESTAMPTZ,
    -- The Last Will, stored at CONNECT so that a crash cannot swallow it.
    will_topic       TEXT COLLATE "C" CHECK (octet_length(will_topic) BETWEEN 1 AND 65535),
    will_payload     BYTEA,
    will_qos         SMALLINT CHECK (will_qos IN (0, 1, 2)),
    will_retain      BOOLEAN,
    will_properties  JSONB CHECK (jsonb_typeof(will_properties) = 'object'),
    will_delay       BIGINT CHECK (will_delay BETWEEN 0 AND 4294967295),
    -- When the will is due (offline, not resumed by then); NULL while
    -- connected.
    will_due_at      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, client_id),
    CHECK ((will_topic IS NULL AND will_payload IS NULL AND will_qos IS NULL
            AND will_retain IS NULL AND will_properties IS NULL AND will_delay IS NULL
            AND will_due_at IS NULL)
        OR (will_topic IS NOT NULL AND will_payload IS NOT NULL AND will_qos IS NOT NULL
            AND will_retain IS NOT NULL AND will_properties IS NOT NULL
            AND will_delay IS NOT NULL))
);

CREATE INDEX mqtt_sessions_expiry ON mqtt_sessions (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX mqtt_sessions_will_due ON mqtt_sessions (will_due_at) WHERE will_due_at IS NOT NULL;
CREATE INDEX mqtt_sessions_connected_by_node ON mqtt_sessions (node_id) WHERE connected;
CREATE INDEX mqtt_sessions_owner ON mqtt_sessions (tenant_id, owner);

CREATE TABLE mqtt_session_subscriptions (
    session_id          BIGINT NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    -- SHA-256 of the filter: a filter may be 65,535 bytes, too long for a
    -- btree entry.
    filter_key          BYTEA NOT NULL CHECK (length(filter_key) = 32),
    filter              TEXT COLLATE "C" NOT NULL CHECK (octet_length(filter) BETWEEN 1 AND 65535),
    qos                 SMALLINT NOT NULL CHECK (qos IN (0, 1, 2)),
    no_local            BOOLEAN NOT NULL,
    retain_as_published BOOLEAN NOT NULL,
    retain_handling     SMALLINT NOT NULL CHECK (retain_handling IN (0, 1, 2)),
    subscription_id     BIGINT CHECK (subscription_id BETWEEN 1 AND 268435455),
    PRIMARY KEY (session_id, filter_key)
);

-- One row per message, however many sessions it is queued for.
CREATE TABLE mqtt_session_messages (
    -- A UUIDv7 chosen by the writer (time-ordered: inserts stay at the
    -- right edge of the index), so no round trip hands out ids.
    id         BYTEA PRIMARY KEY CHECK (length(id) = 16),
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    topic      TEXT COLLATE "C" NOT NULL CHECK (octet_length(topic) BETWEEN 1 AND 65535),
    payload    BYTEA NOT NULL,
    -- As published; only QoS 1/2 deliveries are stored.
    qos        SMALLINT NOT NULL CHECK (qos IN (1, 2)),
    properties JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    -- Absolute Message Expiry: time waiting counts, downtime included.
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX mqtt_session_messages_tenant ON mqtt_session_messages (tenant_id);
CREATE INDEX mqtt_session_messages_expiry ON mqtt_session_messages (expires_at)
    WHERE expires_at IS NOT NULL;

-- Outgoing QoS 1/2 deliveries, queued or in flight, in order per session.
CREATE TABLE mqtt_session_queue (
    session_id       BIGINT NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    -- The broker's per-session order.
    seq              BIGINT NOT NULL CHECK (seq >= 0),
    message_id       BYTEA NOT NULL REFERENCES mqtt_session_messages (id),
    -- After the downgrade to the subscription's QoS.
    qos              SMALLINT NOT NULL CHECK (qos IN (1, 2)),
    retain           BOOLEAN NOT NULL,
    -- Matching Subscription Identifiers; NULL when none.
    subscription_ids JSONB CHECK (jsonb_typeof(subscription_ids) = 'array'),
    -- The $share/ filter it came through, to give it to another member if
    -- this one leaves.
    shared_filter    TEXT COLLATE "C",
    -- queued: not sent yet; sent: PUBLISH sent (resent with DUP), PUBACK
    -- or PUBREC awaited; released: PUBREL sent, PUBCOMP awaited.
    state            TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'released')),
    packet_id        INTEGER CHECK (packet_id BETWEEN 1 AND 65535),
    PRIMARY KEY (session_id, seq),
    CHECK ((state = 'queued') = (packet_id IS NULL)),
    CHECK (state <> 'released' OR qos = 2)
);

-- Garbage collection of bodies looks rows up by message.
CREATE INDEX mqtt_session_queue_message ON mqtt_session_queue (message_id);

-- Client → server QoS 2 packet ids whose PUBREL has not arrived: a resend
-- of one is acknowledged, not delivered twice.
CREATE TABLE mqtt_session_incoming (
    session_id BIGINT NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    packet_id  INTEGER NOT NULL CHECK (packet_id BETWEEN 1 AND 65535),
    PRIMARY KEY (session_id, packet_id)
);
