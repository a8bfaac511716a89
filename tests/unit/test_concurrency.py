"""The adaptive in-flight limit: shrinks while answers are slow, grows back when fast."""

from __future__ import annotations

from app.gateway.concurrency import WINDOW, ConcurrencyLimit


def _answer(limit: ConcurrencyLimit, n: int, elapsed_s: float) -> None:
    for _ in range(n):
        limit.enter()
        limit.leave(elapsed_s)


def test_light_load_never_meets_the_limit() -> None:
    limit = ConcurrencyLimit(target_s=0.05, max_limit=200)
    _answer(limit, 10 * WINDOW, 0.01)
    assert limit.limit == 200
    limit.in_flight = 150
    assert limit.refusal(0) is None


def test_slow_answers_shrink_the_limit_until_requests_are_refused() -> None:
    limit = ConcurrencyLimit(target_s=0.05, min_limit=8, max_limit=200)
    _answer(limit, 60 * WINDOW, 0.2)  # every window over target
    assert limit.limit == 8
    limit.in_flight = 8
    assert limit.refusal(0) == 1.0
    assert limit.refusal(None) == 1.0
    assert limit.refused == 2
    limit.in_flight = 7
    assert limit.refusal(0) is None


def test_low_priority_is_refused_first() -> None:
    limit = ConcurrencyLimit(target_s=0.05, max_limit=40)
    limit.in_flight = 25
    assert limit.refusal(0) is None
    assert limit.refusal(None) is None
    assert limit.refusal(-1) == 1.0  # half the limit below the default priority


def test_fast_answers_grow_it_back_one_per_window() -> None:
    limit = ConcurrencyLimit(target_s=0.05, min_limit=8, max_limit=200, limit=8)
    _answer(limit, 5 * WINDOW, 0.01)
    assert limit.limit == 13


def test_target_zero_turns_it_off() -> None:
    limit = ConcurrencyLimit(target_s=0.0, max_limit=1)
    limit.in_flight = 10_000
    assert limit.refusal(-5) is None


def test_a_flood_from_a_standing_start_is_met_within_two_windows() -> None:
    limit = ConcurrencyLimit(target_s=0.05, min_limit=8, max_limit=1000)
    for _ in range(100):  # a hundred in flight, none answered yet
        limit.enter()
    for _ in range(2 * WINDOW):
        limit.leave(0.5)  # ten times the target
        limit.enter()  # the next one takes its place
    # From the hundred actually in flight, halved (the ratio 0.1, bounded at a half).
    assert limit.limit == 50
    assert limit.refusal(0) == 1.0


def test_one_slow_window_alone_is_a_hiccup() -> None:
    limit = ConcurrencyLimit(target_s=0.05, min_limit=8, max_limit=100, limit=60)
    _answer(limit, WINDOW, 0.01)
    _answer(limit, WINDOW, 0.5)  # a collection, a replica starting
    _answer(limit, WINDOW, 0.01)
    _answer(limit, WINDOW, 0.5)
    assert limit.limit == 62, "neither slow window cut it; the two fast ones grew it"
    _answer(limit, WINDOW, 0.5)  # the second slow window in a row: an overload
    assert limit.limit < 62


def test_a_window_just_over_target_shrinks_by_a_tenth_of_the_peak() -> None:
    limit = ConcurrencyLimit(target_s=0.05, min_limit=8, max_limit=1000, limit=40)
    limit.in_flight = 60  # more than the limit, admitted before it shrank
    _answer(limit, 2 * WINDOW, 0.052)
    assert limit.limit == 40 * 0.9  # the limit, not the larger peak, is what shrinks


def test_a_queue_refusal_brings_the_limit_down_to_what_is_in_flight() -> None:
    limit = ConcurrencyLimit(target_s=0.05, min_limit=8, max_limit=1000)
    for _ in range(40):
        limit.enter()
    limit.queue_refused()  # the 40th: the queue's wait would break the target
    assert limit.in_flight == 39
    assert limit.limit == 40
    limit.enter()  # one more fits where the refused one was...
    assert limit.refusal(0) == 1.0  # ...and the next is refused at the edge
    for _ in range(39):
        limit.leave(0.01)
    limit.queue_refused()  # with one in flight: not below the floor
    assert limit.limit == 8
    # Neither refusal counts as an answer: the window closes at the 64th fast one.
    _answer(limit, WINDOW - 40, 0.01)
    assert limit.limit == 8
    _answer(limit, 1, 0.01)
    assert limit.limit == 9
