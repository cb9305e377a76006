-- The central database: the cluster, its nodes, and (from later migrations)
-- users, buckets, the object version index and accounting.

CREATE TABLE cluster (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    k           integer NOT NULL CHECK (k >= 1),
    n           integer NOT NULL CHECK (n >= k),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE node (
    id          serial PRIMARY KEY,
    cluster_id  integer NOT NULL REFERENCES cluster (id),
    name        text NOT NULL UNIQUE,
    writer_endpoint   text NOT NULL,
    reader_endpoint   text NOT NULL,
    -- position in the cluster's node list (placement input)
    node_number integer NOT NULL,
    UNIQUE (cluster_id, node_number)
);
