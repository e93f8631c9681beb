"""Summary rows (``python -m bench --all``'s table) of the data-path benches of issue 22."""

from __future__ import annotations

from typing import Any

# (figure label, value, baseline, ratio, target text, passed or None when no target).
Row = tuple[str, Any, Any, Any, str, bool | None]


def _load(r: dict[str, Any], key: str = "load_avg_after") -> str:
    la = r.get(key) or r.get("load_avg") or []
    return f" (load {la[0]})" if la else ""


def rows_cache_hit(r: dict[str, Any]) -> list[Row]:
    ratio = r.get("ratio_cache_hit_to_naive")
    return [
        (
            f"cache-hit export, {r.get('games', 0):,}-game header-heavy DB (ms) vs naive exact count"
            + _load(r),
            r.get("cache_hit_ms"),
            r.get("naive_count_ms"),
            ratio,
            "<= 0.05 x naive",
            None if ratio is None else ratio <= 0.05 and bool(r.get("targets_met")),
        )
    ]


def rows_refresh_1m(r: dict[str, Any]) -> list[Row]:
    med = r.get("refresh_after_100_median_ms")
    return [
        (
            f"refresh after 100 new games, {r.get('games', 0):,}-game DB, median ms (CPU "
            f"{r.get('refresh_after_100_cpu_median_ms')}) vs naive COUNT(*)" + _load(r),
            med,
            r.get("naive_count_12_configs_ms"),
            r.get("ratio_naive_over_refresh"),
            "< 10 ms",
            None if med is None else med < 10,
        )
    ]


def rows_incremental(r: dict[str, Any]) -> list[Row]:
    ratio = r.get("ratio_reexport_to_full")
    return [
        (
            f"re-export after +{r.get('new_per_round')} games on {r.get('games', 0):,} (s), same samples "
            f"{r.get('same_samples')}, vs full export" + _load(r),
            r.get("reexport_seconds"),
            r.get("full_export_seconds"),
            ratio,
            "<= 0.25 x full",
            None if ratio is None else ratio <= 0.25 and bool(r.get("same_samples")),
        )
    ]


def rows_rss(r: dict[str, Any]) -> list[Row]:
    large, small = r.get("large") or {}, r.get("small") or {}
    mb = large.get("sum_of_peaks_mb")
    return [
        (
            f"export peak RSS MB, all {large.get('processes')} processes, {large.get('games', 0):,} games"
            f" vs {small.get('games', 0):,}" + _load(r),
            mb,
            small.get("sum_of_peaks_mb"),
            r.get("ratio_large_to_small"),
            "< 1024 MB",
            None if mb is None else mb < 1024,
        )
    ]


SUMMARIES = {
    "export_cache_hit": rows_cache_hit,
    "gamedb_refresh_1m": rows_refresh_1m,
    "export_incremental": rows_incremental,
    "export_rss": rows_rss,
}
