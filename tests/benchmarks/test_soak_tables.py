"""The soak's arithmetic: RSS slopes, worker counters across a restart, the apps' record files."""

from __future__ import annotations

from pathlib import Path

from benchmarks._soak_apps import read_records, send_times
from benchmarks._soak_watch import Sample, pct, per_minute, processed_rate, slopes


def _samples(rss: list[float | None], processed: list[float | None], every_s: float = 30.0
             ) -> list[Sample]:
    return [Sample(i * every_s, {"w": r}, {"w": 0.0}, {"w": p})
            for i, (r, p) in enumerate(zip(rss, processed, strict=True))]


def test_slope_is_mib_per_minute_within_the_window() -> None:
    # 2 MiB per 30 s sample = 4 MiB/min, then flat from 120 s on
    samples = _samples([100, 102, 104, 106, 108, 108, 108, 108], [0] * 8)
    assert abs(slopes(samples, ["w"], 0, 90)["w"] - 4.0) < 1e-9
    assert abs(slopes(samples, ["w"], 120, 210)["w"]) < 1e-9
    assert slopes(samples, ["w"], 200, 210) == {}  # fewer than 3 points: no slope


def test_processed_rate_adds_up_a_counter_that_restarts() -> None:
    # 0 -> 300 (worker killed: no scrape) -> restarted at 0 -> 150: 450 events in 120 s
    samples = _samples([1.0] * 5, [0, 300, None, 60, 150])
    assert processed_rate(samples, ["w"]) == (300 + 60 + 90) / 120


def test_per_minute_shows_a_dead_process_as_a_dash() -> None:
    samples = _samples([100, None, 120], [0, None, 5], every_s=40)
    table = per_minute(samples, ["w"], ["w"], {0: 600, 1: 60})
    assert table.splitlines()[1].split() == ["1", "10", "-", "0"]
    assert table.splitlines()[2].split() == ["2", "1", "120", "0"]


def test_pct_nearest_rank() -> None:
    assert pct(list(range(1, 101)), 50) == 51
    assert pct(list(range(1, 101)), 99) == 100


def test_records_and_send_times(tmp_path: Path) -> None:
    app = tmp_path / "app-0.txt"
    app.write_text("E e1 10.5\nE e2 11.0\nH s1 e2 11.0 replay_tool_ua u1\nS 2 2 0 0 3.5\n")
    rec = read_records([app])
    assert (rec.events, rec.delivered, rec.dropped, rec.finished) == (2, 2, 0, 1)
    assert [(h.session, h.event_id, h.user) for h in rec.hijacks] == [("s1", "e2", "u1")]
    assert send_times([app], {"e2"}) == {"e2": 11.0}
