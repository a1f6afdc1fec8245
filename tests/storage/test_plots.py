"""storage/plots.py: every figure draws into the Axes given or a Figure pyplot never sees, and
renders to a PNG with the Agg canvas, also from many threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import matplotlib
import pandas as pd
import pytest
from integration.test_queries import BASE, Incident

from storage import plots

matplotlib.use("Agg")

PNG = b"\x89PNG\r\n\x1a\n"
T = pd.Timestamp(BASE)


def frames() -> dict[str, tuple]:
    """One small frame of each shape the plots take, as the storage functions return them."""
    inc = Incident()
    events = pd.DataFrame(inc.rows["events"])
    home = events[events["session"] == "s-home"].sort_values("time_ms")
    timeline = pd.DataFrame({
        "kind": ["event"] * len(home) + ["finding", "revocation"],
        "time": pd.to_datetime(list(home["time_ms"]) + [inc.hijack.time.timestamp() * 1000] * 2,
                               unit="ms", utc=True),
        "what": list(home["type"]) + ["session.ip_change", "revoke"],
        "ip": list(home["ip"]) + ["167.99.10.10", None],
        "country": list(home["country"]) + [None, None], "asn": list(home["asn"]) + [None, None],
        "client": list(home["client"]) + [None, None],
        "severity": [None] * len(home) + ["high", "high"]})
    from storage.places import session_places

    located = session_places(timeline)
    hours = [T, T, T + timedelta(hours=1)]
    hourly = pd.DataFrame({"hour": hours, "what": ["a", "b", "a"], "tenant": ["x", "y", "x"],
                           "count": [3, 1, 2]})
    sources = pd.DataFrame({"ip": ["1.2.3.4", "5.6.7.8"], "network": ["AS1", "AS2"],
                            "network_kind": ["hosting", ""], "country": ["DE", ""],
                            "events": [9, 4]})
    reasons = pd.DataFrame({"detector": ["d1", "d1", "d2"], "severity": ["high", "medium", "high"],
                            "action": ["revoke", "step_up", "block"], "revocations": [3, 1, 2]})
    latency = pd.DataFrame({"decided_s": [0.0, 1.0, 1.0, 3.0, -1.0]})
    stats = pd.DataFrame({"hour": hours, "detector": ["d1", "d2", "d1"], "findings": [2, 1, 4]})
    verdicts = pd.DataFrame({"detector": ["d1", "d2"], "confirmed": [3, 0], "dismissed": [1, 0],
                             "benign_rate": [0.25, float("nan")]})
    sweep = pd.DataFrame({"value": [1, 2, 3], "decisions": [9, 6, 5], "confirmed": [4, 4, 4],
                          "benign": [2, 1, 1], "unjudged": [3, 1, 0], "not_confirmed": [5, 2, 1]})
    changes = pd.DataFrame({"detector": ["d1", "d2"], "before": [3, 0], "new": [1, 2],
                            "change": [-2, 2]})
    return {
        "session_timeline": (plots.plot_session_timeline, timeline),
        "session_places": (plots.plot_session_places, located),
        "distance": (plots.plot_distance, located),
        "hourly": (lambda f, ax=None: plots.plot_hourly(f, by="what", ax=ax), hourly),
        "top_sources": (plots.plot_top_sources, sources),
        "revocation_reasons": (plots.plot_revocation_reasons, reasons),
        "latency": (plots.plot_latency, latency),
        "detector_volume": (plots.plot_detector_volume, stats),
        "benign_rate": (plots.plot_benign_rate, verdicts),
        "threshold_sweep": (lambda f, ax=None: plots.plot_threshold_sweep(f, ax=ax, current=2), sweep),
        "before_after": (plots.plot_before_after, changes),
    }


FRAMES = frames()


@pytest.mark.parametrize("name", FRAMES)
def test_each_plot_makes_its_own_figure_without_pyplot(name: str) -> None:
    import matplotlib.pyplot as plt

    plot, frame = FRAMES[name]
    before = plt.get_fignums()
    ax = plot(frame)
    assert ax.get_title(), name
    assert ax.figure.canvas.manager is None, f"{name}: pyplot made the figure"
    assert plt.get_fignums() == before
    data = plots.png(ax)
    assert data.startswith(PNG) and len(data) > 5_000


@pytest.mark.parametrize("name", FRAMES)
def test_each_plot_draws_into_the_axes_it_is_given(name: str) -> None:
    plot, frame = FRAMES[name]
    ax = plots.new_axes()
    assert plot(frame, ax=ax) is ax


@pytest.mark.parametrize("name", FRAMES)
def test_each_plot_says_so_when_there_is_nothing(name: str) -> None:
    plot, frame = FRAMES[name]
    ax = plot(frame.iloc[0:0])
    assert ax.get_title() and plots.png(ax).startswith(PNG)


def test_png_of_a_pyplot_figure_closes_it() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.plot_latency(FRAMES["latency"][1], ax=ax)
    assert plots.png(fig).startswith(PNG)
    assert fig.number not in plt.get_fignums()


def test_figures_render_in_many_threads_at_once() -> None:
    # What a web server does: one figure per request, no shared pyplot state.
    def draw(i: int) -> bytes:
        plot, frame = list(FRAMES.values())[i % len(FRAMES)]
        return plots.png(plot(frame))

    with ThreadPoolExecutor(max_workers=8) as pool:
        images = list(pool.map(draw, range(32)))
    assert all(image.startswith(PNG) for image in images)
    assert images[0] == images[len(FRAMES)]  # the same figure, the same bytes
