"""Forwarding one held copy to its home writer, exactly as it was received.

A held share goes home as ``archive-key-entire`` (one sequence) or
``archive-key-start``, ``-next``..., ``-final``, with the identity, timestamp,
per-sequence sizes, checksums and zfec padding, and the file summary it was
stored with; ``source-node-name`` is this node and there is no
``handoff-node-name`` (the home stores it as its own). A held tombstone goes
home as the ``destroy-key`` it was (same id, version and part destroyed).

Invariants:
- Every sequence is read from this node's value files and its md5 compared
  with the stored one, off the event loop, before any of its bytes are sent:
  bad bytes never leave the node. A mismatch ends the forward as ``DAMAGED``
  (an archive already started at home is cancelled, so nothing of it is ever
  readable there).
- ``FORWARDED`` is returned only on the home's ``success`` for the last
  message, which the home sends after its fsync: only then may the copy be
  purged. A home that already has the share answers success too, so a forward
  repeated after a crash, or done by both holders, is harmless.
- This module sends through the :class:`HomeWriter` protocol and imports no
  ZeroMQ; :mod:`services.handoff.transport` supplies the real connection.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.common import messages, protocol, valuefile
from services.common.messages import FileInfo
from services.common.protocol import ErrorCode, Header
from services.handoff.model import HeldSegment, HeldSequence

log = logging.getLogger(__name__)

ENTIRE = "archive-key-entire"
START = "archive-key-start"
NEXT = "archive-key-next"
FINAL = "archive-key-final"

#: Replies that say the home is going away, not that it refused the copy.
_GOING_AWAY = frozenset({ErrorCode.SHUTTING_DOWN.value, ErrorCode.UNAVAILABLE.value})


class Unreachable(Exception):
    """The home did not answer (timeout, closed connection, shutting down)."""


class HomeWriter(Protocol):
    """A connection to one home's writer."""

    async def request(
        self, header: Header, payloads: Sequence[bytes] = (), timeout_s: float | None = None
    ) -> Header:
        """Send one request; the reply's header. Raises :class:`Unreachable`."""
        ...

    async def close(self) -> None: ...


class Outcome(enum.Enum):
    FORWARDED = "forwarded"
    #: This node's copy is rotten or incomplete; recorded, never sent.
    DAMAGED = "damaged"
    #: The home answered with an error; the copy stays held and is retried later.
    REFUSED = "refused"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    #: Share bytes the home acknowledged.
    bytes_sent: int = 0
    #: DAMAGED: the first bad sequence; REFUSED: the home's error code.
    sequence_num: int = 0
    detail: str = ""


class Damage(Exception):
    def __init__(self, sequence_num: int, reason: str) -> None:
        super().__init__(f"sequence {sequence_num}: {reason}")
        self.sequence_num = sequence_num
        self.reason = reason


def archive_kinds(count: int) -> list[str]:
    """The message type of each sequence's archive.

    >>> archive_kinds(1)
    ['archive-key-entire']
    >>> archive_kinds(3)
    ['archive-key-start', 'archive-key-next', 'archive-key-final']
    """
    if count < 1:
        raise ValueError("a segment has at least one sequence")
    if count == 1:
        return [ENTIRE]
    return [START, *([NEXT] * (count - 2)), FINAL]


def check_complete(segment: HeldSegment, sequences: Sequence[HeldSequence]) -> None:
    """Raise :class:`Damage` unless the copy can be forwarded whole."""
    for expected, sequence in enumerate(sequences):
        if sequence.sequence_num != expected:
            raise Damage(expected, "sequence missing from the segment's rows")
    if not sequences:
        raise Damage(0, "segment has no sequences")
    if segment.file_size is None or segment.file_hash is None or segment.file_adler32 is None:
        raise Damage(len(sequences) - 1, "final segment without a file summary")


def read_verified(data_dir: Path, sequence: HeldSequence) -> bytes:
    """The sequence's share bytes, checked against the stored md5 (blocking)."""
    try:
        data = valuefile.read_range(data_dir, sequence.location)
    except (OSError, EOFError) as exc:
        raise Damage(sequence.sequence_num, f"unreadable: {exc}") from exc
    if hashlib.md5(data).digest() != sequence.md5:
        raise Damage(sequence.sequence_num, "md5 mismatch")
    return data


def archive_header(
    segment: HeldSegment, sequence: HeldSequence, kind: str, share: bytes, source_node_name: str
) -> Header:
    """The home-bound archive request for one sequence of a held share."""
    file = None
    if kind in (ENTIRE, FINAL):
        assert segment.file_size is not None and segment.file_hash is not None
        assert segment.file_adler32 is not None
        file = FileInfo(
            segment.file_size, segment.file_hash, segment.file_adler32, segment.user_meta
        )
    return messages.archive(
        kind,
        segment.ref,
        share,
        sequence.sequence_num,
        zfec_padding_size=sequence.zfec_padding_size,
        file=file,
        timestamp_s=segment.timestamp_s,
        source_node_name=source_node_name,
        user_request_id=segment.user_request_id,
    )


def destroy_header(segment: HeldSegment, source_node_name: str) -> Header:
    """The home-bound ``destroy-key`` of a held tombstone."""
    header = messages.destroy(
        segment.ref,
        segment.destroyed_unified_id,
        timestamp_s=segment.timestamp_s,
        conjoined_part_to_delete=segment.destroyed_conjoined_part,
    )
    header["source-node-name"] = source_node_name
    if segment.user_request_id:
        header["user-request-id"] = segment.user_request_id
    return header


def _load_piece(
    data_dir: Path, segment: HeldSegment, sequence: HeldSequence, kind: str, node_name: str
) -> tuple[Header, bytes]:
    share = read_verified(data_dir, sequence)
    return archive_header(segment, sequence, kind, share, node_name), share


async def _send(
    home: HomeWriter, header: Header, payloads: Sequence[bytes], timeout_s: float
) -> str:
    reply = await home.request(header, payloads, timeout_s)
    result = str(reply.get("result"))
    if result in _GOING_AWAY:
        raise Unreachable(f"home answered {result}: {reply.get('error-message', '')}")
    if result != protocol.SUCCESS:
        log.info(
            "home refused %s of %r unified-id %s: %s: %s",
            header.get("message-type"),
            header.get("key"),
            header.get("unified-id"),
            result,
            reply.get("error-message", ""),
        )
    return result


async def forward_share(
    home: HomeWriter,
    segment: HeldSegment,
    sequences: Sequence[HeldSequence],
    data_dir: Path,
    node_name: str,
    timeout_s: float,
) -> Result:
    """Send a held final share home, sequence by sequence, verifying each first."""
    try:
        check_complete(segment, sequences)
    except Damage as damage:
        return Result(Outcome.DAMAGED, sequence_num=damage.sequence_num, detail=damage.reason)
    kinds = archive_kinds(len(sequences))
    sent = 0
    for index, (sequence, kind) in enumerate(zip(sequences, kinds, strict=True)):
        try:
            header, share = await asyncio.to_thread(
                _load_piece, data_dir, segment, sequence, kind, node_name
            )
        except Damage as damage:
            if index > 0:  # an archive is open at the home
                await _cancel(home, segment)
            return Result(Outcome.DAMAGED, sent, damage.sequence_num, damage.reason)
        result = await _send(home, header, [share], timeout_s)
        if result != protocol.SUCCESS:
            # No cancel: when both holders forward at once they share one archive
            # at the home, and a cancel would end the other's too. A start retried
            # later replaces whatever is left of this one.
            return Result(Outcome.REFUSED, sent, sequence.sequence_num, result)
        sent += len(share)
    return Result(Outcome.FORWARDED, sent)


async def forward_tombstone(
    home: HomeWriter, segment: HeldSegment, node_name: str, timeout_s: float
) -> Result:
    result = await _send(home, destroy_header(segment, node_name), (), timeout_s)
    if result != protocol.SUCCESS:
        return Result(Outcome.REFUSED, detail=result)
    return Result(Outcome.FORWARDED)


async def _cancel(home: HomeWriter, segment: HeldSegment) -> None:
    """Best effort: the home never finishes an archive we could not complete."""
    try:
        await home.request(messages.cancel(segment.ref), (), 5.0)
    except Unreachable:
        pass
