-- Which nodes hold sessions, offline ones too: a cluster member looks for
-- nodes that died holding any session (`Store::nodes_in_use`), one index
-- step per distinct node.
CREATE INDEX mqtt_sessions_by_node ON mqtt_sessions (node_id);
