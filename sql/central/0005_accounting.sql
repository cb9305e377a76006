-- Space accounting: hourly totals per bucket, kept by the accounting service,
-- and the hand-over that makes each usage detail count exactly once.

-- Bytes added, removed and retrieved per bucket (collection-id) and hour.
-- bucket_id is not a foreign key: usage outlives a deleted bucket.
CREATE TABLE accounting_hourly (
    bucket_id        bigint NOT NULL,
    hour             timestamptz NOT NULL,
    bytes_added      bigint NOT NULL DEFAULT 0,
    bytes_removed    bigint NOT NULL DEFAULT 0,
    bytes_retrieved  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_id, hour)
);

-- Idempotency keys of the details already counted: the accounting service
-- inserts the key and adds to the totals in one transaction, so a detail sent
-- again (its sender never saw the acknowledgement) is not counted twice.
CREATE TABLE accounting_detail (
    detail_id   text PRIMARY KEY,
    counted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounting_detail_counted_at ON accounting_detail (counted_at);

-- The gateway's outbox: a detail is queued here in the same transaction as
-- the change it counts (a version committed, space freed) and deleted once
-- the accounting service has acknowledged it.
CREATE TABLE accounting_outbox (
    id          bigserial PRIMARY KEY,
    bucket_id   bigint NOT NULL,
    event       text NOT NULL
                CHECK (event IN ('bytes-added', 'bytes-removed', 'bytes-retrieved')),
    value       bigint NOT NULL CHECK (value >= 0),
    occurred_at timestamptz NOT NULL DEFAULT now()
);

-- Bytes a garbage row frees that were counted as added: the size of a
-- retired version; 0 for part attempts that never became a version.
ALTER TABLE garbage_segment ADD COLUMN size bigint NOT NULL DEFAULT 0;
