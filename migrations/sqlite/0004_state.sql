-- Device state that survives a restart (issue 6): durable retained
-- messages, device presence, and the reported/desired state document.
-- Timestamps: RFC 3339 UTC text with exactly 6 fractional digits, written by
-- the application (see migrations/README.md).

CREATE TABLE retained_messages (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- An MQTT topic name: at most 65,535 bytes of UTF-8 (MQTT 1.5.4).
    topic      TEXT NOT NULL CHECK (length(CAST(topic AS BLOB)) BETWEEN 1 AND 65535),
    -- Never empty: an empty retained payload deletes the row.
    payload    BLOB NOT NULL CHECK (length(payload) > 0),
    qos        INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    -- The message's pass-through properties as a JSON object (the broker
    -- decides what goes in; the store only keeps it).
    properties TEXT NOT NULL DEFAULT '{}'
               CHECK (json_valid(properties) AND json_type(properties) = 'object'),
    -- Absolute expiry (Message Expiry Interval added to the publish time),
    -- so a restart does not extend it. NULL: never expires.
    expires_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, topic)
) STRICT;

-- Purging expired rows walks only rows that can expire.
CREATE INDEX retained_messages_expiry ON retained_messages (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TABLE device_presence (
    tenant_id         TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    -- Start of the current (online) or last (offline) connection.
    connected_at      TEXT,
    disconnected_at   TEXT,
    -- Time of the last event seen from the device; written at most every
    -- few seconds, not per message.
    last_seen         TEXT NOT NULL,
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
) STRICT;

CREATE INDEX device_presence_online_by_node ON device_presence (node_id)
    WHERE status = 'online';

CREATE TABLE device_state (
    tenant_id        TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    -- JSON objects, changed by JSON merge patch (RFC 7386).
    reported         TEXT NOT NULL DEFAULT '{}'
                     CHECK (json_valid(reported) AND json_type(reported) = 'object'),
    reported_version INTEGER NOT NULL DEFAULT 0 CHECK (reported_version >= 0),
    reported_at      TEXT,
    -- Why the last payload on the reported topic was not merged (not a JSON
    -- object); cleared by the next good one.
    reported_error   TEXT,
    desired          TEXT NOT NULL DEFAULT '{}'
                     CHECK (json_valid(desired) AND json_type(desired) = 'object'),
    desired_version  INTEGER NOT NULL DEFAULT 0 CHECK (desired_version >= 0),
    desired_at       TEXT,
    -- Last lifecycle event sequence number handed out for the device.
    event_seq        INTEGER NOT NULL DEFAULT 0 CHECK (event_seq >= 0),
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
) STRICT;
