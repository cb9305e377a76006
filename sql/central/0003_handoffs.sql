-- Where shares whose home writer was down at write time were handed off:
-- {"<segment-num>": ["<holder node>", "<holder node>"]}. Reads try the home
-- first, then these holders, until the handoff service has moved the share home.
ALTER TABLE object_version ADD COLUMN handoffs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE object_part ADD COLUMN handoffs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE multipart_part ADD COLUMN handoffs jsonb NOT NULL DEFAULT '{}';
