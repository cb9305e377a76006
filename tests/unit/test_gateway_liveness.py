"""The rules by which the gateway counts a writer or reader up or down (pure logic)."""

from __future__ import annotations

from services.gateway.nodes import Liveness

TIMEOUT = 1.0


def connected(down_after: int = 2) -> Liveness:
    state = Liveness(down_after)
    state.connection_made()
    return state


def test_starts_up_and_stays_up_while_pings_are_answered() -> None:
    state = connected()
    assert state.up
    for sent in (0.0, 0.5, 1.0):
        assert not state.answered(sent, state.epoch)
    assert state.up and state.misses == 0 and state.reason == ""


def test_down_after_that_many_misses_in_a_row_then_up_on_one_answer() -> None:
    state = connected(down_after=2)
    assert not state.missed(0.0, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    assert state.up and state.misses == 1
    assert state.missed(0.5, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    assert not state.up
    assert state.reason == "2 pings in a row unanswered within 1 s"
    # Further misses change nothing (and report nothing).
    assert not state.missed(1.0, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    assert state.answered(1.5, state.epoch)
    assert state.up and state.misses == 0 and state.reason == ""


def test_an_answer_in_between_resets_the_count() -> None:
    state = connected(down_after=2)
    state.missed(0.0, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    state.answered(0.5, state.epoch)
    assert not state.missed(1.0, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    assert state.up and state.misses == 1


def test_an_older_ping_timing_out_after_a_newer_was_answered_is_no_miss() -> None:
    # Pings overlap (interval < timeout): the one sent at 0.0 times out after
    # the one sent at 0.5 was answered.
    state = connected(down_after=1)
    state.answered(0.5, state.epoch)
    assert not state.missed(0.0, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    assert state.up and state.misses == 0


def test_a_ping_is_no_miss_when_the_service_answered_something_else_meanwhile() -> None:
    state = connected(down_after=1)
    assert not state.missed(0.0, state.epoch, heard_since=True, timeout_s=TIMEOUT)
    assert state.up and state.misses == 0


def test_without_a_connection_one_miss_is_enough() -> None:
    state = Liveness(down_after=3)  # never connected, as with a node down when the gateway starts
    assert state.missed(0.0, state.epoch, heard_since=False, timeout_s=TIMEOUT)
    assert not state.up
    assert state.reason == "not connected and a ping unanswered within 1 s"


def test_a_lost_connection_is_down_at_once_and_old_answers_do_not_bring_it_back() -> None:
    state = connected()
    before = state.epoch
    assert state.connection_lost()
    assert not state.up and not state.connected and state.reason == "connection lost"
    # The answer to a ping sent on the lost connection, processed late.
    assert not state.answered(0.0, before)
    assert not state.up
    # Reconnected (the process restarted or resumed); a ping sent since is answered.
    state.connection_made()
    assert not state.up  # a handshake alone is not enough
    assert state.answered(1.0, state.epoch)
    assert state.up and state.connected


def test_losing_the_connection_again_while_down_reports_nothing() -> None:
    state = connected()
    assert state.connection_lost()
    assert not state.connection_lost()
    assert state.reason == "connection lost"  # the first reason is kept


def test_misses_of_pings_sent_before_a_lost_connection_do_not_count() -> None:
    state = connected(down_after=1)
    before = state.epoch
    state.connection_lost()
    state.connection_made()
    state.answered(0.2, state.epoch)
    assert state.up
    assert not state.missed(0.1, before, heard_since=False, timeout_s=TIMEOUT)
    assert state.up


def test_fail_is_down_at_once_and_needs_an_answer_to_come_back() -> None:
    state = connected(down_after=3)
    assert state.fail("shutting down")
    assert not state.up and state.reason == "shutting down" and state.misses == 3
    assert not state.fail("no reply to archive within 10 s")
    assert state.reason == "shutting down"
    assert state.answered(0.0, state.epoch)
    assert state.up
