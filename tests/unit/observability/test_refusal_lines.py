"""Edge refusals under a flood: a few access lines a second, then one count per window."""

from __future__ import annotations

import asyncio

from app.observability.refusal_lines import RefusalLines
from tests.unit.observability.log_capture import LogLines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _suppressed(log_lines: LogLines) -> list[tuple[str, int, int]]:
    return [
        (line["route"], line["status"], line["count"])
        for line in log_lines()
        if line["event"] == "access_suppressed"
    ]


def test_the_first_lines_of_each_second_are_written_and_the_rest_counted(
    log_lines: LogLines,
) -> None:
    clock = Clock()
    lines = RefusalLines(3, clock=clock)
    own = [lines.own_line("/predict", 429) for _ in range(5)]
    own.append(lines.own_line("/predict/batch", 429))
    own.append(lines.own_line("/predict", 503))
    assert own == [True, True, True, False, False, False, False]
    assert _suppressed(log_lines) == [], "counted until the window closes"

    clock.now += 0.99
    assert lines.own_line("/predict", 429) is False  # still the same window
    clock.now += 0.02  # the next window: its first refusal writes the last one's counts
    assert lines.own_line("/predict", 429) is True
    assert _suppressed(log_lines) == [
        ("/predict", 429, 3),
        ("/predict", 503, 1),
        ("/predict/batch", 429, 1),
    ]
    line = next(x for x in log_lines() if x["event"] == "access_suppressed")
    assert (line["logger"], line["level"], line["window_s"]) == ("app.access", "info", 1.0)


def test_a_quiet_window_writes_nothing_and_zero_writes_only_counts(log_lines: LogLines) -> None:
    clock = Clock()
    lines = RefusalLines(0, clock=clock)
    assert [lines.own_line("/predict", 429) for _ in range(4)] == [False] * 4
    clock.now += 5.0
    lines.flush()
    lines.flush()  # nothing left: no second line
    assert _suppressed(log_lines) == [("/predict", 429, 4)]


async def test_the_count_is_written_when_the_window_ends_without_another_refusal(
    log_lines: LogLines,
) -> None:
    loop = asyncio.get_running_loop()
    lines = RefusalLines(1, clock=loop.time)
    assert lines.own_line("/predict", 429) is True
    assert lines.own_line("/predict", 429) is False
    assert lines.own_line("/predict", 429) is False
    await asyncio.sleep(0.5)
    assert _suppressed(log_lines) == []
    await asyncio.sleep(0.7)  # the flood stopped; the window's end still reports it
    assert _suppressed(log_lines) == [("/predict", 429, 2)]
