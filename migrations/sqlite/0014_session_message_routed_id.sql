-- Sessions across a cluster (issue 15): the id a queued message was
-- routed with between nodes (16 bytes: the origin node's run, then its
-- order there), so that a node taking a session over, or replaying the
-- cluster's journal into it, does not queue a second copy of a message
-- the stored queue already holds. NULL: published on a single node, or
-- stored before this migration.
ALTER TABLE mqtt_session_messages ADD COLUMN routed_id BLOB
    CHECK (routed_id IS NULL OR length(routed_id) = 16);
