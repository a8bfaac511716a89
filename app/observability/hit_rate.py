"""Hit and miss counts of a cache as ``/stats`` shows them."""

from __future__ import annotations


def hit_rate(cache: dict[tuple[str, bool], int], name: str) -> dict[str, int | float | None]:
    """``{hits, misses, hit_rate}`` for ``name`` from counts keyed by (cache, hit)."""
    hits, misses = cache.get((name, True), 0), cache.get((name, False), 0)
    total = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": round(hits / total, 6) if total else None}
