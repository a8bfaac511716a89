"""Does green answer like blue? The shadow figures of a rollout and the gates they must pass.

An error rate only says whether green answers. For a trading model a green that answers
200 with the other sign is worse than one that fails, so while a rollout is active every
gateway also scores a sample of the rows blue answered on green, off the response path
(:mod:`app.gateway.shadow`), and reports what it saw. The controller adds the reports up
here and judges them with :class:`ShadowGates`: the rollout moves from ``shadowing`` to
its first traffic step only when enough rows were compared and every gate passes, and the
same gates keep being checked during the traffic steps.

Figures (over every row compared since the rollout started):

- direction agreement: share of rows where green's ``prob_up`` is on the same side of 0.5
  as blue's;
- mean absolute difference of ``prob_up`` and of ``expected_return``;
- green's error rate (shadow calls that failed or came back malformed) and mean latency;
- rows shed (never scored because a gateway was busy or its shadow queue was full).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

# What a gateway reports, as plain numbers (``ShadowTally.as_report`` builds it).
REPORT_FIELDS = (
    "rows", "agree", "errors", "shed", "abs_diff_prob_up", "abs_diff_expected_return",
    "latency_ms",
)  # fmt: skip


class ShadowTotals(BaseModel):
    """Running sums of the shadow comparisons; persisted with the rollout state."""

    model_config = ConfigDict(extra="ignore")

    rows: int = 0  # rows green answered (and so were compared)
    agree: int = 0  # of those, on the same side of 0.5 as blue
    errors: int = 0  # rows green failed
    shed: int = 0  # rows never sent to green (load)
    abs_diff_prob_up: float = 0.0
    abs_diff_expected_return: float = 0.0
    latency_ms: float = 0.0  # summed over green's calls, per row

    def add(self, report: Mapping[str, float]) -> None:
        for name in REPORT_FIELDS:
            value = report.get(name, 0)
            current = getattr(self, name)
            setattr(self, name, current + type(current)(value))

    @property
    def scored(self) -> int:
        return self.rows + self.errors

    def figures(self) -> dict[str, Any]:
        """The figures as ``rollout status``, ``/stats`` and alerts show them."""
        rows = self.rows
        return {
            "rows": rows,
            "errors": self.errors,
            "shed": self.shed,
            "direction_agreement_pct": _pct(self.agree, rows),
            "prob_up_mae": _mean(self.abs_diff_prob_up, rows),
            "expected_return_mae": _mean(self.abs_diff_expected_return, rows),
            "error_rate_pct": _pct(self.errors, self.scored),
            "green_latency_ms_mean": _mean(self.latency_ms, rows),
        }


@dataclass(frozen=True)
class ShadowGates:
    duration_s: float = 0.0  # 0: no shadow phase (the dataclass default; the config's is 300)
    sample_pct: float = 20.0
    min_samples: int = 200
    min_direction_agreement_pct: float = 95.0
    max_prob_up_mae: float = 0.05
    max_expected_return_mae: float | None = None
    max_error_rate_pct: float = 5.0

    def enough(self, totals: ShadowTotals) -> bool:
        return totals.scored >= self.min_samples

    def failures(self, totals: ShadowTotals) -> list[str]:
        """Each gate ``totals`` fails, in words with the figures; empty when all pass.
        Only meaningful once :meth:`enough`."""
        f = totals.figures()
        out: list[str] = []
        agreement = f["direction_agreement_pct"]
        if agreement is None or agreement < self.min_direction_agreement_pct:
            out.append(
                f"direction agreement {_show(agreement)}% < {self.min_direction_agreement_pct:g}%"
            )
        if (f["prob_up_mae"] or 0.0) > self.max_prob_up_mae:
            out.append(f"prob_up MAE {f['prob_up_mae']:.4f} > {self.max_prob_up_mae:g}")
        cap = self.max_expected_return_mae
        if cap is not None and (f["expected_return_mae"] or 0.0) > cap:
            out.append(f"expected_return MAE {f['expected_return_mae']:.3g} > {cap:g}")
        if (f["error_rate_pct"] or 0.0) > self.max_error_rate_pct:
            out.append(
                f"green shadow error rate {f['error_rate_pct']:.1f}% > {self.max_error_rate_pct:g}%"
            )
        return out

    def verdict(self, totals: ShadowTotals) -> str | None:
        """Why green must stop, with the figures; None while it passes or lacks samples."""
        if not self.enough(totals):
            return None
        failed = self.failures(totals)
        if not failed:
            return None
        return f"shadow gate failed over {totals.rows} rows: " + "; ".join(failed)


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
