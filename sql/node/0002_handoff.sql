-- The handoff service: shares this node holds for another node are forwarded
-- to their home and then purged here.

-- 'P' purged: a copy held for another node (a final share or a tombstone)
-- that its home has confirmed; never read or forwarded again. Its value-file
-- bytes are reclaimed later, like those of 'C' and 'D' segments.
ALTER TABLE segment DROP CONSTRAINT segment_status_check;
ALTER TABLE segment ADD CONSTRAINT segment_status_check
    CHECK (status IN ('A', 'F', 'C', 'T', 'D', 'P'));

-- For tombstones: the one part a destroy-key was limited to
-- (destroy-conjoined-part; NULL: every part). Kept so that a tombstone held
-- for another node is forwarded exactly as it was received.
ALTER TABLE segment ADD COLUMN destroyed_conjoined_part integer;

-- What the handoff worker walks: copies held for each home, in arrival order.
CREATE INDEX segment_held ON segment (handoff_node_name, id)
    WHERE handoff_node_name IS NOT NULL AND status IN ('F', 'T');
