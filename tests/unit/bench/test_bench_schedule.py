"""The arrival schedule: even by default, Poisson on request, dealt out to senders."""

from __future__ import annotations

import itertools
import statistics

import pytest

from app.bench.schedule import offsets, share


def gaps(times: list[float]) -> list[float]:
    """Inter-arrival gaps of sorted due times."""
    return [b - a for a, b in itertools.pairwise(times)]


def test_even_arrivals_are_evenly_spaced() -> None:
    times = offsets(200.0, 1000)
    spread = gaps(times)
    assert min(spread) == pytest.approx(0.005)
    assert max(spread) - min(spread) < 1e-9


def test_senders_are_offset_so_the_aggregate_stays_even() -> None:
    rate, n, senders = 300.0, 900, 3
    times = offsets(rate, n)
    shares = [[times[k] for k in share(n, s, senders)] for s in range(senders)]
    # Each sender runs at rate / senders, evenly...
    for mine in shares:
        assert max(gaps(mine)) - min(gaps(mine)) < 1e-9
        assert gaps(mine)[0] == pytest.approx(senders / rate)
    # ...offset from the next by one global interval: never two sends at once.
    assert [mine[0] for mine in shares] == pytest.approx([0.0, 1 / rate, 2 / rate])
    merged = sorted(t for mine in shares for t in mine)
    assert merged == times
    assert min(gaps(merged)) == pytest.approx(1 / rate)
    assert sorted(k for s in range(senders) for k in share(n, s, senders)) == list(range(n))


def test_poisson_arrivals_have_the_rate_and_the_dispersion_of_a_poisson_process() -> None:
    rate, n = 100.0, 20000
    times = offsets(rate, n, "poisson", seed=7)
    spread = gaps(times)
    mean = statistics.fmean(spread)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    # Exponential gaps: standard deviation equals the mean (coefficient of variation 1).
    assert statistics.pstdev(spread) / mean == pytest.approx(1.0, abs=0.05)
    # Counts in 1 s windows: variance equals the mean (index of dispersion 1).
    counts = [0] * int(times[-1])
    for t in times:
        if int(t) < len(counts):
            counts[int(t)] += 1
    dispersion = statistics.pvariance(counts) / statistics.fmean(counts)
    assert dispersion == pytest.approx(1.0, abs=0.25)
    assert offsets(rate, 50, "poisson", seed=7) == times[:50]  # every sender sees the same


def test_the_schedule_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="positive"):
        offsets(0.0, 10)
    with pytest.raises(ValueError, match="arrivals"):
        offsets(10.0, 10, "bursty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="range"):
        share(10, 2, 2)
