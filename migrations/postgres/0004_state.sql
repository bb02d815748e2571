-- Device state that survives a restart (issue 6): durable retained
-- messages, device presence, and the reported/desired state document.

CREATE TABLE retained_messages (
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- An MQTT topic name: at most 65,535 bytes of UTF-8 (MQTT 1.5.4).
    topic      TEXT COLLATE "C" NOT NULL CHECK (octet_length(topic) BETWEEN 1 AND 65535),
    -- Never empty: an empty retained payload deletes the row.
    payload    BYTEA NOT NULL CHECK (length(payload) > 0),
    qos        SMALLINT NOT NULL CHECK (qos IN (0, 1, 2)),
    -- The message's pass-through properties as a JSON object (the broker
    -- decides what goes in; the store only keeps it).
    properties JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    -- Absolute expiry (Message Expiry Interval added to the publish time),
    -- so a restart does not extend it. NULL: never expires.
    expires_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, topic)
);

-- Purging expired rows walks only rows that can expire.
CREATE INDEX retained_messages_expiry ON retained_messages (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TABLE device_presence (
    tenant_id         TEXT COLLATE "C" NOT NULL,
    device_id         TEXT COLLATE "C" NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    -- Start of the current (online) or last (offline) connection.
    connected_at      TIMESTAMPTZ,
    disconnected_at   TIMESTAMPTZ,
    -- Time of the last event seen from the device; written at most every
    -- few seconds, not per message.
    last_seen         TIMESTAMPTZ NOT NULL,
    remote_addr       TEXT,
    -- "3.1.1" or "5.0".
    protocol          TEXT,
    -- How the device authenticated ("certificate", "password", …).
    credential        TEXT,
    disconnect_reason TEXT,
    -- The broker node that holds (or last held) the connection, so a node
    -- restarting after a crash can set its devices offline.
    node_id           TEXT,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX device_presence_online_by_node ON device_presence (node_id)
    WHERE status = 'online';

CREATE TABLE device_state (
    tenant_id        TEXT COLLATE "C" NOT NULL,
    device_id        TEXT COLLATE "C" NOT NULL,
    -- JSON objects, changed by JSON merge patch (RFC 7386).
    reported         JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(reported) = 'object'),
    reported_version BIGINT NOT NULL DEFAULT 0 CHECK (reported_version >= 0),
    reported_at      TIMESTAMPTZ,
    -- Why the last payload on the reported topic was not merged (not a JSON
    -- object); cleared by the next good one.
    reported_error   TEXT,
    desired          JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(desired) = 'object'),
    desired_version  BIGINT NOT NULL DEFAULT 0 CHECK (desired_version >= 0),
    desired_at       TIMESTAMPTZ,
    -- Last lifecycle event sequence number handed out for the device.
    event_seq        BIGINT NOT NULL DEFAULT 0 CHECK (event_seq >= 0),
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
