"""The events service: one stream of cluster events (PULL → PUB, recent history).

Every service PUSHes its events (:class:`services.common.events.EventSender`)
to the pipeline; each valid one is published with its ``event-type`` as the
topic and kept among the recent ones that ``recent-events-request`` returns
(see :mod:`services.events.pipeline` and :mod:`services.events.handlers`).
Every event has ``event-type``, ``service``, ``node-name`` (empty for
cluster-wide services) and ``timestamp``; the types sent so far and their
own fields:

- ``service-started`` / ``service-stopping`` (every service): ``pid``.
- ``object-created`` (gateway): ``bucket``, ``key``, ``unified-id``,
  ``size``, ``etag``, ``shares-home``, ``shares-handed-off``, ``live``.
- ``object-removed`` (gateway): ``bucket``, ``key``.
- ``share-handed-off`` (writer, once a share held for a down node is final):
  ``home-node``, ``collection-id``, ``key``, ``unified-id``,
  ``conjoined-part``, ``segment-num``.
- ``share-forwarded`` (handoff, once the home confirmed it): the same fields
  and ``bytes``.
- ``handoff-backlog`` (handoff, when what it holds changed): ``holdings``
  ({home: {segments, bytes, tombstones, damaged}}), ``segments``, ``bytes``.
- ``damage-found`` (reader, handoff): the segment's fields, ``sequence-num``,
  ``reason``, ``detected-by``.

Other types are named where they are sent.
"""
