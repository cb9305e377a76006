"""The accounting service's own Prometheus metrics (beside the shared RPC ones).

Label values are bounded: ``event`` is one of the three events, ``reason`` an
error code of :class:`services.common.protocol.ErrorCode`, ``rejected`` (the
database refused the detail) or ``shutdown`` (still queued when the service
had to stop).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DETAILS_COUNTED = Counter(
    "nimbus_accounting_details_counted",
    "Usage details added to the hourly totals, by event",
    ["event"],
)
BYTES_COUNTED = Counter(
    "nimbus_accounting_bytes_counted",
    "Bytes added to the hourly totals, by event",
    ["event"],
)
DETAILS_DUPLICATE = Counter(
    "nimbus_accounting_details_duplicate",
    "Usage details not counted because their detail-id was counted before",
)
DETAILS_DROPPED = Counter(
    "nimbus_accounting_details_dropped",
    "Usage details dropped without being counted, by reason",
    ["reason"],
)
DETAILS_PRUNED = Counter(
    "nimbus_accounting_details_pruned",
    "Detail-ids forgotten after the retention time",
)
BATCH_DETAILS = Histogram(
    "nimbus_accounting_batch_details",
    "Details counted per database transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
DATABASE_FAILURES = Counter(
    "nimbus_accounting_database_failures",
    "Transactions that failed and were retried (the database was away or busy)",
)
