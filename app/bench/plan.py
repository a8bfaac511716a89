"""The order of a benchmark's runs: A/B/A alternation and the find-max staircase.

Pure functions of a ``measure(name, rate) -> run`` callback, so the stepping rules are
tested with a fake and the runner only supplies real measurements.

- At each rate the systems alternate A/B/A (Serve, peer, Serve; then the hello floor
  when calibrating): runs near saturation drift by tens of percent from one minute to
  the next (DESIGN 4b), and a second Serve run after the peer shows how much.
- ``find_max`` climbs ``start, start + step, ...`` with every system still passing
  measured at each step, in the same alternating order, so the highest passing rates are
  compared within one stretch of time. A system drops out at its first failing step.
  A system that fails the very first step then steps *down* from ``start`` by ``step``
  (the systems doing so alternate again) until a rate passes, so every system ends with a
  highest passing rate and the ratios are decided in every sitting: started too high for
  the peer, session 17's table had no Serve / peer ratio at all.
- ``find_max_sittings`` repeats the whole staircase and keeps, per system, the sitting
  with the median highest rate (:func:`median_sitting`): on this VM one sitting's
  Serve / peer ratio ranged from 0.64x to 1.14x within an hour (sessions 16-17), so a
  single staircase decides little. Every sitting's maximum stays in the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Why a staircase stopped, as goals reads it: the generator failed a step, or none failed.
BEHIND = "the load generator fell behind"
AT_LIMIT = "reached --find-max-limit"
_NONE_PASSED = -1.0  # orders a sitting in which no rate passed below every rate

Run = dict[str, Any]
Measure = Callable[[str, float], Run]


def aba_order(names: Sequence[str]) -> list[str]:
    """``serve, baseline, serve`` (then any others once) when both are in ``names``."""
    if "serve" in names and "baseline" in names:
        head = ["serve", "baseline", "serve"]
        return head + [n for n in names if n not in ("serve", "baseline")]
    return list(names)


def passes(run: Run, p99_limit_ms: float) -> tuple[bool, str]:
    """A find-max step passes with p99 <= the limit, no errors and a generator that kept up."""
    rate = float(run["offered_rps"])
    p99 = run["latency_ms"]["p99"]
    if not run["generator"]["kept_up"]:
        return False, f"{BEHIND} at {rate:g} req/s"
    errors = run["errors"]["total"]
    if errors:
        return False, f"{errors} errors at {rate:g} req/s"
    if p99 is None or p99 > p99_limit_ms:
        return False, f"p99 {p99} ms > {p99_limit_ms:g} ms at {rate:g} req/s"
    return True, ""


def rates(start: float, step: float, limit: float) -> list[float]:
    """``start, start + step, ...`` up to ``limit`` (computed by index: no float drift)."""
    if start <= 0 or step <= 0:
        raise ValueError("find-max start and step must be positive")
    count = int((limit - start) / step + 1e-9) + 1 if limit >= start else 0
    return [round(start + i * step, 6) for i in range(count)]


def find_max(
    names: Sequence[str],
    measure: Measure,
    *,
    start: float,
    step: float,
    limit: float,
    p99_limit_ms: float,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, Any]]:
    """Per system: the highest passing rate, why it stopped, and every step's run."""
    out: dict[str, dict[str, Any]] = {
        n: {
            "max_passing_rps": None,
            "stopped_because": f"{AT_LIMIT} {limit:g}",
            "steps": [],
        }
        for n in names
    }

    def measure_each(group: list[str], rate: float, what: str) -> Iterator[tuple[str, bool, str]]:
        """Each system of ``group`` in turn at ``rate``: its name, whether it passed, why not."""
        for name in list(group):  # the caller may drop ``name`` from ``group``
            progress(f"{name}: {what} {rate:g} req/s")
            run = measure(name, rate)
            out[name]["steps"].append(run)
            yield name, *passes(run, p99_limit_ms)

    alive = list(names)
    for rate in rates(start, step, limit):
        for name, ok, why in measure_each(alive, rate, "find-max step"):
            if ok:
                out[name]["max_passing_rps"] = rate
            else:
                out[name]["stopped_because"] = why
                alive.remove(name)
    below = [n for n in names if out[n]["max_passing_rps"] is None and out[n]["steps"]]
    # start - step, start - 2 * step, ... while positive: from the start, which need not
    # be a multiple of the step (700 by 300 steps down to 400, then 100).
    down = [round(start - i * step, 6) for i in range(1, int(start / step - 1e-9) + 1)]
    for rate in down:
        for name, ok, _ in measure_each(below, rate, "find-max step down to"):
            if ok:
                out[name]["max_passing_rps"] = rate
                below.remove(name)
    for name in below if down else ():
        out[name]["stopped_because"] += f"; no rate down to {down[-1]:g} req/s passed"
    return out


def find_max_sittings(
    names: Sequence[str],
    measure: Measure,
    *,
    sittings: int,
    progress: Callable[[str], None] = lambda _: None,
    **staircase: Any,
) -> dict[str, dict[str, Any]]:
    """:func:`find_max` ``sittings`` times over; per system, :func:`median_sitting`.
    ``staircase``: find_max's keyword arguments (start, step, limit, p99_limit_ms)."""
    if sittings < 1:
        raise ValueError("find-max sittings must be >= 1")

    def sitting(i: int) -> dict[str, dict[str, Any]]:
        tag = f"sitting {i + 1}/{sittings}: " if sittings > 1 else ""

        def measure_in(name: str, rate: float) -> Run:
            run = measure(name, rate)
            run["sitting"] = i
            return run

        def say(message: str) -> None:
            progress(tag + message)

        return find_max(names, measure_in, progress=say, **staircase)

    rounds = [sitting(i) for i in range(sittings)]
    return {n: median_sitting([r[n] for r in rounds]) for n in names}


def median_sitting(found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One system's staircases -> the one whose highest passing rate is the median (the
    lower middle one of an even count: a rate that was measured), with every sitting's
    maximum and reason (``sittings``) and every step of every sitting (``steps``)."""
    if len(found) == 1:
        return found[0]
    order = sorted(range(len(found)), key=lambda i: _max_or_none_passed(found[i]))
    median = found[order[(len(found) - 1) // 2]]
    return {
        **median,
        "steps": [run for fm in found for run in fm["steps"]],
        "sittings": [
            {"max_passing_rps": fm["max_passing_rps"], "stopped_because": fm["stopped_because"]}
            for fm in found
        ],
    }


def _max_or_none_passed(found: dict[str, Any]) -> float:
    rate = found["max_passing_rps"]
    return _NONE_PASSED if rate is None else float(rate)
