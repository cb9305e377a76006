-- Users, access keys, buckets, the object version index and multipart uploads.

CREATE TABLE app_user (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Secrets are encrypted with the cluster's master key (AES-GCM); never plain.
CREATE TABLE access_key (
    access_key_id     text PRIMARY KEY,
    user_id           bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    secret_encrypted  bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    disabled          boolean NOT NULL DEFAULT false
);

-- A bucket's id is the collection-id of every message about its objects.
CREATE TABLE bucket (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    owner_id        bigint NOT NULL REFERENCES app_user (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    versioning      text NOT NULL DEFAULT 'Disabled'
                    CHECK (versioning IN ('Disabled', 'Enabled', 'Suspended')),
    -- the storage policy in force when the bucket was made
    k               integer NOT NULL,
    n               integer NOT NULL,
    sequence_size   integer NOT NULL
);

-- One row per object version. A row is written only when every share of the
-- version is durable, so nothing half-written is ever listed or read.
-- state: 'live' (the current version of its key), 'dead' (overwritten or
-- deleted; its segments are destroyed on the nodes, space reclaimed later).
CREATE TABLE object_version (
    bucket_id       bigint NOT NULL REFERENCES bucket (id),
    key             text COLLATE "C" NOT NULL,
    unified_id      bigint NOT NULL,
    state           text NOT NULL CHECK (state IN ('live', 'dead')),
    size            bigint NOT NULL,
    etag            text NOT NULL,
    content_md5     bytea,
    content_type    text NOT NULL,
    -- x-amz-meta-* and the other stored headers (Content-Encoding, ...)
    headers         jsonb NOT NULL DEFAULT '{}',
    k               integer NOT NULL,
    n               integer NOT NULL,
    sequence_size   integer NOT NULL,
    -- the node names holding share 0..n-1, in order, when it was written
    homes           text[] NOT NULL,
    -- multipart: number of parts (their layout is in object_part); 0 otherwise
    part_count      integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    destroyed_at    timestamptz,
    PRIMARY KEY (bucket_id, key, unified_id)
);
-- At most one live version per key; listings walk this index in key order.
CREATE UNIQUE INDEX object_version_live ON object_version (bucket_id, key) WHERE state = 'live';
CREATE INDEX object_version_dead ON object_version (destroyed_at) WHERE state = 'dead';

-- The parts of a multipart version, in object order.
CREATE TABLE object_part (
    bucket_id       bigint NOT NULL,
    key             text COLLATE "C" NOT NULL,
    unified_id      bigint NOT NULL,
    part_number     integer NOT NULL,
    conjoined_part  integer NOT NULL,
    offset_bytes    bigint NOT NULL,
    size            bigint NOT NULL,
    etag            text NOT NULL,
    PRIMARY KEY (bucket_id, key, unified_id, part_number),
    FOREIGN KEY (bucket_id, key, unified_id)
        REFERENCES object_version (bucket_id, key, unified_id) ON DELETE CASCADE
);

CREATE TABLE multipart_upload (
    upload_id       text PRIMARY KEY,
    bucket_id       bigint NOT NULL REFERENCES bucket (id),
    key             text COLLATE "C" NOT NULL,
    -- the version id the completed object will have
    unified_id      bigint NOT NULL,
    owner_id        bigint NOT NULL REFERENCES app_user (id),
    content_type    text NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    homes           text[] NOT NULL,
    k               integer NOT NULL,
    n               integer NOT NULL,
    sequence_size   integer NOT NULL,
    -- each part upload gets the next conjoined-part number, so a re-uploaded
    -- part never collides with the shares of the attempt it replaces
    next_conjoined  integer NOT NULL DEFAULT 1,
    state           text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'completed', 'aborted')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX multipart_upload_bucket ON multipart_upload (bucket_id, key, created_at)
    WHERE state = 'open';

-- The latest stored attempt of each part number.
CREATE TABLE multipart_part (
    upload_id       text NOT NULL REFERENCES multipart_upload (upload_id) ON DELETE CASCADE,
    part_number     integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    conjoined_part  integer NOT NULL,
    size            bigint NOT NULL,
    etag            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);

-- Segments no longer referenced by any live version, to destroy on the nodes:
-- overwritten/deleted versions, replaced part attempts, aborted uploads.
CREATE TABLE garbage_segment (
    id              bigserial PRIMARY KEY,
    bucket_id       bigint NOT NULL,
    key             text COLLATE "C" NOT NULL,
    unified_id      bigint NOT NULL,
    conjoined_part  integer,
    homes           text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
