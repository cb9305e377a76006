"""The accounting service: bytes added, removed and retrieved per bucket and hour.

Two sockets take ``space-accounting-detail`` messages (``collection-id``,
``event``, ``value``, ``timestamp``, optional ``detail-id``):

- the PULL *pipeline* (fire and forget): a malformed detail is logged,
  counted in ``nimbus_accounting_details_dropped_total`` and dropped;
- the ROUTER (acknowledged): ``detail-id`` is required and the reply
  ``space-accounting-detail-reply`` / ``success`` is sent only after the
  transaction that counted the detail has committed.

The ROUTER also answers ``space-usage-request`` and ``ping``.

Exactly once, by decision: a sender that must not lose nor double a detail
(the gateway's outbox) uses the acknowledged ROUTER path with a detail-id that
is stable across its retries, and resends every detail until it is
acknowledged. The service counts a detail in one transaction that inserts its
detail-id into ``accounting_detail`` and, only if that id was new, adds the
value to ``accounting_hourly``; a resend of a counted detail is acknowledged
again without being counted. Ids are remembered for ``detail_retention_s``
(then pruned), so a resend must arrive within that time. Details on the
pipeline are at most once: ZeroMQ may drop them when the service is away, and
one without a detail-id is never deduplicated.

Invariants:
- Totals only ever change in the transaction that records the ids of the
  details they include; a crash at any point loses nothing acknowledged.
- Nothing a peer sends stops the service.
"""
