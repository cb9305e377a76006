-- A node's own database: where every share this node stores lies, and its state.
-- The index of the whole cluster can be rebuilt from these tables alone.

CREATE TABLE value_file (
    id             bigserial PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz,
    -- bytes appended so far, updated when the file is closed or rolled over
    size_bytes     bigint NOT NULL DEFAULT 0
);

-- One node's share (segment) of one (unified id, conjoined part).
-- status: 'A' being archived, 'F' final (durable, readable), 'C' cancelled,
--         'T' tombstone (records a destroy-key), 'D' destroyed by a tombstone.
CREATE TABLE segment (
    id                  bigserial PRIMARY KEY,
    collection_id       bigint NOT NULL,
    key                 text COLLATE "C" NOT NULL,
    unified_id          bigint NOT NULL,
    conjoined_part      integer NOT NULL DEFAULT 0,
    segment_num         integer NOT NULL CHECK (segment_num >= 0),
    status              char(1) NOT NULL CHECK (status IN ('A', 'F', 'C', 'T', 'D')),
    timestamp_s         double precision NOT NULL,
    -- set when this node holds the segment for another (down) node
    handoff_node_name   text,
    source_node_name    text,
    user_request_id     text,
    file_size           bigint,
    file_adler32        bigint,
    file_hash           bytea,
    file_user_meta      jsonb,
    -- for tombstones: the version destroyed (NULL: every older version)
    destroyed_unified_id bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz
);

-- At most one final copy of a share per holder.
CREATE UNIQUE INDEX segment_final_identity ON segment
    (collection_id, key, unified_id, conjoined_part, segment_num,
     coalesce(handoff_node_name, ''))
    WHERE status = 'F';
CREATE INDEX segment_lookup ON segment (collection_id, key, unified_id);
CREATE INDEX segment_handoff ON segment (handoff_node_name) WHERE handoff_node_name IS NOT NULL;
CREATE INDEX segment_active ON segment (status) WHERE status = 'A';

-- Where each sequence's share of a segment lies, with its checksums.
CREATE TABLE segment_sequence (
    segment_id          bigint NOT NULL REFERENCES segment (id) ON DELETE CASCADE,
    sequence_num        integer NOT NULL CHECK (sequence_num >= 0),
    value_file_id       bigint NOT NULL REFERENCES value_file (id),
    value_file_offset   bigint NOT NULL,
    size                bigint NOT NULL,
    zfec_padding_size   integer NOT NULL DEFAULT 0,
    hash                bytea NOT NULL,
    adler32             bigint NOT NULL,
    PRIMARY KEY (segment_id, sequence_num)
);
CREATE INDEX segment_sequence_value_file ON segment_sequence (value_file_id);

-- Sequences found rotten (by a reader or a scrub), waiting for repair.
CREATE TABLE damaged_segment (
    segment_id      bigint NOT NULL REFERENCES segment (id) ON DELETE CASCADE,
    sequence_num    integer NOT NULL,
    reason          text NOT NULL,
    detected_by     text NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id, sequence_num)
);

-- Where each background worker (scrub, audit, handoff) resumes.
CREATE TABLE repair_cursor (
    worker      text PRIMARY KEY,
    cursor      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
