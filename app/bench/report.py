"""Spec 12.1 verdicts, Serve/baseline ratios and the printed table of a benchmark.

Everything here is a pure function of the result dicts the runner collects, so the
table a user reads and the JSON a CI job archives cannot disagree.
"""

from __future__ import annotations

from typing import Any

from app.bench.goals import KEY as GOALS_KEY
from app.config import PerformanceTargets

LATENCY_KEYS = ("p50", "p95", "p99", "p99_9", "max")


def _run_at(runs: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next((r for r in runs if abs(float(r["offered_rps"]) - rate) < 1e-9), None)


def _verdict(
    what: str,
    limit: float,
    measured: float | None,
    met: bool | None,
    margin: float | None,
    text: str,
) -> dict[str, Any]:
    return {
        "check": what,
        "limit": limit,
        "measured": measured,
        "met": met,
        "margin": margin,
        "text": text,
    }


def _check(what: str, measured: float | None, limit: float, unit: str = "ms") -> dict[str, Any]:
    if measured is None:
        return _verdict(what, limit, None, False, None, f"{what}: no successful requests")
    margin = round(limit - measured, 3)
    met = margin >= 0
    how = f"met, {margin:g} {unit} to spare" if met else f"NOT met, over by {-margin:g} {unit}"
    text = f"{what} <= {limit:g} {unit}: {measured:g} {unit} ({how})"
    return _verdict(what, limit, measured, met, margin, text)


def verdicts(runs: list[dict[str, Any]], targets: PerformanceTargets) -> list[dict[str, Any]]:
    """Spec 12.1: p50/p95/p99/max at the target rate, p99 at the max rate, availability."""
    lat = targets.latency
    out: list[dict[str, Any]] = []
    plan = [
        (
            targets.throughput.target_rps,
            [("p50", lat.p50_ms), ("p95", lat.p95_ms), ("p99", lat.p99_ms), ("max", lat.max_ms)],
        ),
        (targets.throughput.max_rps, [("p99", lat.p99_ms)]),
    ]
    for rate, checks in plan:
        # Alternated runs (A/B/A) measure a rate twice: the worse run decides, as in
        # issue 11's checks (app/bench/goals.py).
        at = [r for r in runs if abs(float(r["offered_rps"]) - rate) < 1e-9]
        for key, limit in checks:
            what = f"{key} at {rate:g} req/s"
            if not at:
                text = f"{what}: not measured (add {rate:g} to --rates)"
                out.append(_verdict(what, limit, None, None, None, text))
                continue
            out.append(min((_latency(what, run, key, limit) for run in at), key=_standing))
        if at:
            avail = min(_availability_pct(run) for run in at)
            out.append(_availability(rate, avail, targets.availability.target_pct))
    return out


def _latency(what: str, run: dict[str, Any], key: str, limit: float) -> dict[str, Any]:
    v = _check(what, run["latency_ms"][key], limit)
    if run["errors"]["total"]:
        v["met"] = False
        v["text"] += f"; {run['errors']['total']} errors"
    return v


def _standing(v: dict[str, Any]) -> tuple[bool, float]:
    """Orders verdicts worst first: missed before met, then by the smaller margin."""
    margin = v["margin"]
    return (bool(v["met"]), float("-inf") if margin is None else margin)


def _availability_pct(run: dict[str, Any]) -> float:
    total = run["requests"]["scheduled"]
    return round(100.0 * run["requests"]["ok"] / total if total else 0.0, 4)


def _availability(rate: float, pct: float, target: float) -> dict[str, Any]:
    met = pct >= target
    what = f"availability at {rate:g} req/s"
    text = f"{what} >= {target:g}%: {pct:g}% ({'met' if met else 'NOT met'})"
    return _verdict(what, target, pct, met, round(pct - target, 4), text)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def comparison(serve: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Serve / baseline for every rate both ran, and for the highest passing rate."""
    rows = []
    for run in serve["runs"]:
        other = _run_at(baseline["runs"], float(run["offered_rps"]))
        if other is None:
            continue
        rows.append(
            {
                "offered_rps": run["offered_rps"],
                "achieved_rps": _ratio(run["achieved_rps"], other["achieved_rps"]),
                **{k: _ratio(run["latency_ms"][k], other["latency_ms"][k]) for k in LATENCY_KEYS},
            }
        )
    s_max = (serve.get("find_max") or {}).get("max_passing_rps")
    b_max = (baseline.get("find_max") or {}).get("max_passing_rps")
    return {"per_rate": rows, "max_rate": _ratio(s_max, b_max)}


def _fmt(v: Any, width: int, digits: int = 1) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float):
        # Seconds-long latencies of an overloaded server must not break the columns.
        return f"{v:.{digits if abs(v) < 1000 else 0}f}".rjust(width)
    return str(v).rjust(width)


HEADER = (
    f"{'target':<9}{'path':<15}{'offered':>8}{'achieved':>9}{'pred/s':>8}"
    f"{'p50':>7}{'p95':>7}{'p99':>7}{'p99.9':>7}{'max':>7}{'err':>6}"
    f"{'batch':>6}{'lag99':>6}{'gen':>7}{'us/req':>7}{'load1':>6}{'box':>5}"
)


def run_line(target: str, run: dict[str, Any]) -> str:
    """One row: which instrument, the 1-minute load average before the run, and the
    generator's own CPU per request beside every latency figure."""
    lat = run["latency_ms"]
    srv = run.get("server", {}).get("stats", {})
    batch = (srv.get("batch_size") or {}).get("mean") if isinstance(srv, dict) else None
    gen = run["generator"]
    flag = "" if gen["kept_up"] else "  <- client fell behind"
    load = run.get("loadavg_1m_before", run.get("loadavg_1m"))
    box = (run.get("server", {}).get("box") or {}).get("busy_pct_of_core")
    return (
        f"{target:<9}{run['path']:<15}{_fmt(float(run['offered_rps']), 8)}"
        f"{_fmt(float(run['achieved_rps']), 9)}{_fmt(float(run['predictions_per_s']), 8, 0)}"
        + "".join(_fmt(lat[k], 7) for k in LATENCY_KEYS)
        + f"{_fmt(run['errors']['total'], 6)}{_fmt(batch, 6)}"
        f"{_fmt(gen['send_lag_ms']['p99'], 6)}{_fmt(gen.get('instrument'), 7)}"
        f"{_fmt(gen.get('cpu_us_per_request'), 7, 0)}"
        f"{_fmt(load, 6, 2)}{_fmt(box, 5, 0)}{flag}"
    )


def find_max_table(result: dict[str, Any]) -> list[str]:
    """Highest rate with p99 within target: Serve, the no-Ray peer, the bare hello floor."""
    cols = [n for n in ("serve", "baseline", "hello") if "find_max" in result["targets"].get(n, {})]
    if not cols:
        return []
    names = {"serve": "Serve", "baseline": "peer", "hello": "hello"}
    lines = ["", "highest rate with p99 within target (req/s; stopped because)"]
    lines.append("  " + "".join(f"{names[c]:>12}" for c in cols))
    fms = [result["targets"][c]["find_max"] for c in cols]
    lines.append("  " + "".join(_fmt(fm["max_passing_rps"], 12) for fm in fms))
    lines += [f"  {names[c]}: {fm['stopped_because']}" for c, fm in zip(cols, fms, strict=True)]
    return lines + sittings_lines(result)


def sittings_lines(result: dict[str, Any]) -> list[str]:
    """With ``--find-max-sittings N``: each sitting's highest rate per system (the table
    above holds the median sitting) and the Serve / peer and Serve / hello ratio of each
    sitting, whose systems ran side by side."""
    targets = result["targets"]
    per = {
        n: [s["max_passing_rps"] for s in targets[n]["find_max"]["sittings"]]
        for n in ("serve", "baseline", "hello")
        if "sittings" in (targets.get(n, {}).get("find_max") or {})
    }
    if not per:
        return []
    names = {"serve": "Serve", "baseline": "peer", "hello": "hello"}
    lines = [f"  sittings ({len(next(iter(per.values())))}; the table shows the median):"]
    lines += [
        f"    {names[n]:<6} " + ", ".join(_rate(r) for r in rates) for n, rates in per.items()
    ]
    for ref in ("baseline", "hello"):
        if "serve" in per and ref in per:
            ratios = [
                f"{a / b:.2f}x" if a and b else "-"
                for a, b in zip(per["serve"], per[ref], strict=True)
            ]
            lines.append(f"    Serve / {names[ref]} per sitting: " + ", ".join(ratios))
    return lines


def _rate(rate: float | None) -> str:
    return "none passed" if rate is None else f"{rate:g}"


def calibration_lines(result: dict[str, Any]) -> list[str]:
    rows = result.get("calibration") or []
    if not rows:
        return []
    lines = ["", "generator floor (bare hello app over TLS, same schedules):"]
    for r in rows:
        lines.append(
            f"  {r['offered_rps']:>7g} req/s: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"send lag p99 {r['send_lag_p99_ms']} ms, generator {r['cpu_us_per_request']} us/req "
            f"({r['instrument']})"
        )
    return lines


def _memory_lines(name: str, memory: list[dict[str, Any]]) -> list[str]:
    if not memory:
        return []
    parts = [f"{m['name']} {m['rss_mb']:.0f}" for m in memory]
    total = sum(float(m["rss_mb"]) for m in memory)
    return [f"  {name} RSS MB: {', '.join(parts)}  (total {total:.0f})"]


def served_line(name: str, served: dict[str, Any] | None) -> list[str]:
    """What ``name`` served, as its ``/stats`` said when the run began."""
    if not served:
        return []
    if "error" in served:
        return [f"  {name} served: unknown (/stats: {served['error']})"]
    line = (
        f"  {name} served: {served.get('model')} on {served.get('device')}, "
        f"{served.get('numerics')} numerics, {served.get('engine')} engine"
    )
    fallbacks = [served.get("numerics_fallback"), served.get("engine_fallback")]
    return [line + "".join(f" (fallback: {f})" for f in fallbacks if f)]


SLOW_SECOND_MS = 100.0  # a second whose slowest answer passed spec 12.1's p99 target
_SLOW_SECONDS_SHOWN = 6


def slow_seconds(name: str, run: dict[str, Any]) -> list[str]:
    """One line naming the seconds of ``run`` (its ``timeline``) with errors or an answer
    slower than :data:`SLOW_SECOND_MS`, worst first, at most a few: when a tail came."""
    slow = [
        s
        for s in run.get("timeline") or []
        if s["err"] or (s["max"] is not None and s["max"] > SLOW_SECOND_MS)
    ]
    if not slow:
        return []
    slow.sort(key=lambda s: (-s["err"], -(s["max"] or 0.0)))
    shown = [
        f"+{s['t']}s (max {s['max'] if s['max'] is not None else '-'} ms"
        + (f", {s['err']} err)" if s["err"] else ")")
        for s in slow[:_SLOW_SECONDS_SHOWN]
    ]
    more = len(slow) - len(shown)
    return [
        f"  {name} {run['offered_rps']:g} req/s on {run['path']}: "
        + ", ".join(shown)
        + (f" and {more} more" if more > 0 else "")
    ]


def engines_differ(targets: dict[str, Any]) -> list[str]:
    """A warning under the Serve / peer ratios when the two served different numerics or
    engines: the ratios then compare those as well as the serving paths."""
    pair = [(targets.get(n) or {}).get("served") or {} for n in ("serve", "baseline")]
    keys = ("numerics", "engine")
    seen = [tuple(s.get(k) for k in keys) for s in pair]
    if None in seen[0] + seen[1] or seen[0] == seen[1]:
        return []
    (sn, se), (pn, pe) = seen
    return [
        f"  warning: Serve served {sn} on {se}, the peer {pn} on {pe}: these ratios "
        f"compare those too, not only the serving paths (--peer-engine serve pins the "
        f"peer's engine to Serve's)"
    ]


def format_report(result: dict[str, Any]) -> str:
    lines = [
        "",
        "latency in ms from the scheduled send time; batch = mean forward batch "
        "(server /stats); lag99 = client send lag p99 ms; gen = instrument; us/req = the "
        "generator's own CPU per request (below ~20 req/s it includes the spin before each send, "
        "--generator-spin-ms); load1 = 1-min load average before the run; box = the "
        "machine's busy CPU during the run in % of one core (200 = both cores of a 2-core box)",
        "",
        HEADER,
        "-" * len(HEADER),
    ]
    slow: list[str] = []
    for name, target in result["targets"].items():
        for run in [*target["runs"], *target.get("batch_runs", [])]:
            lines.append(run_line(name, run))
            slow += slow_seconds(name, run)
    if slow:
        lines += [
            "",
            f"seconds with errors or an answer over {SLOW_SECOND_MS:g} ms (into each run's "
            f"measured window, by due time; worst first):",
            *slow,
        ]
    lines += find_max_table(result)
    lines += calibration_lines(result)
    lines.append("")
    for name, target in result["targets"].items():
        lines += served_line(name, target.get("served"))
        lines += _memory_lines(name, target.get("memory", []))
    cmp = result.get("comparison")
    if cmp:
        lines += [
            "",
            "Serve / baseline (latency: >1 means Serve is slower; achieved: <1 means "
            "Serve served less)",
        ]
        for row in cmp["per_rate"]:
            lines.append(
                f"  {row['offered_rps']:>7g} req/s: achieved x{row['achieved_rps']}  "
                + "  ".join(f"{k} x{row[k]}" for k in LATENCY_KEYS)
            )
        lines += engines_differ(result["targets"])
        if cmp["max_rate"] is not None:
            lines.append(f"  max passing rate: x{cmp['max_rate']}")
        elif any("find_max" in t for t in result["targets"].values()):
            lines.append("  max passing rate: no ratio (a target passed no rate)")
    for name, checks in result.get("verdicts", {}).items():
        if name == GOALS_KEY:
            if checks:
                lines += ["", "Issue 11 targets (Serve; the worse of repeated runs decides):"]
                lines += [f"  {g['text']}" for g in checks]
            continue
        lines += ["", f"Spec 12.1 verdicts, {name}:"]
        lines += [f"  [{_mark(c['met'])}] {c['text']}" for c in checks]
    return "\n".join(lines)


def _mark(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "MISS")
