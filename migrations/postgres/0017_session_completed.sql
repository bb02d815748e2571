-- Exactly once across a cluster (issue 15): the routed QoS 2 messages a
-- persistent session has completed (its client sent PUBREC), by routed id
-- (see 0014), written in the same transaction as the queue row's PUBREL
-- state. A journal replay into the session (a dead node's sessions
-- adopted, a session taken from a node cut off from NATS) skips them, so
-- that a message PUBCOMP'd before a crash is not delivered a second time
-- as a new one. Rows older than twice the journal's window are purged.
CREATE TABLE mqtt_session_completed (
    session_id BIGINT NOT NULL REFERENCES mqtt_sessions (id) ON DELETE CASCADE,
    routed_id  BYTEA NOT NULL CHECK (length(routed_id) = 16),
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, routed_id)
);
CREATE INDEX mqtt_session_completed_created ON mqtt_session_completed (created_at);
