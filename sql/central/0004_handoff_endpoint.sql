-- Each node's handoff service, so the gateway can report what every node
-- holds for others (NULL where a node runs none).
ALTER TABLE node ADD COLUMN handoff_endpoint text;
