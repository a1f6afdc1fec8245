"""Figures of the archive's DataFrames (storage/queries.py, fleet.py, places.py), shared by the
notebooks, models/report.py and the console.

Every `plot_*(frame, ax=None, ...)` draws into `ax`, or into a new `matplotlib.figure.Figure`
(never pyplot: a web server may draw in many threads), and returns the Axes. `png(ax)` renders
with the Agg canvas to PNG bytes; `show(ax)` puts that PNG in a notebook. matplotlib is imported
inside the functions only, so a command that prints tables never loads it. Times are UTC.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# One colour per meaning in every figure, so a legend reads the same across them.
SEVERITY_COLORS = {"low": "#7fa7d6", "medium": "#f0b323", "high": "#e4572e",
                   "critical": "#9b1d20"}
SEVERITIES = tuple(SEVERITY_COLORS)
ACTION_COLORS = {"revoke": "#b2182b", "revoke_user": "#67001f", "step_up": "#ef8a62",
                 "block": "#2166ac", "alert": "#999999"}
KIND_COLORS = {"event": "#4c72b0", "finding": "#e4572e", "revocation": "#b2182b",
               "address": "#8172b3", "client": "#2a9d8f"}
VERDICT_COLORS = {"confirmed": "#b2182b", "dismissed": "#2a9d8f", "none": "#bbbbbb"}
# Categories without a colour of their own (tenants, detectors, event types), in order.
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
           "#8c8c8c", "#ccb974", "#64b5cd")
OTHER = "#d0d0d0"
DPI = 110


def preload() -> None:
    """Import every part of matplotlib the plots use, now. A threaded server (the console) must
    not leave that to its first chart requests: matplotlib imported from several threads at once
    half-initialises ("module 'matplotlib' has no attribute 'get_data_path'", seen)."""
    import matplotlib.axes  # noqa: F401
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.dates  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.lines  # noqa: F401
    import matplotlib.patches  # noqa: F401
    import matplotlib.transforms  # noqa: F401


def color_of(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# -- figures without pyplot ------------------------------------------------------------------------

def new_axes(size: tuple[float, float] = (9.0, 4.5)) -> Axes:
    """Axes on a new Figure that pyplot does not know about (thread-safe, never a window)."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained").add_subplot()


def axes(ax: Axes | None, size: tuple[float, float] = (9.0, 4.5)) -> Axes:
    """`ax` if given, else `new_axes(size)`."""
    return ax if ax is not None else new_axes(size)


def _figure(fig_or_ax: Any) -> Figure:
    from matplotlib.figure import Figure, SubFigure

    fig = fig_or_ax if isinstance(fig_or_ax, Figure | SubFigure) else fig_or_ax.figure
    while isinstance(fig, SubFigure):
        fig = fig.figure
    return fig


def png(fig_or_ax: Any, dpi: int = DPI) -> bytes:
    """The figure of `fig_or_ax` as PNG bytes, drawn by the Agg canvas; the figure is closed
    (a figure pyplot made is released from pyplot, any other is left to the garbage collector)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure(fig_or_ax)
    buffer = io.BytesIO()
    if fig.canvas.manager is not None:  # made by pyplot: keep its canvas, then let pyplot drop it
        fig.savefig(buffer, format="png", dpi=dpi)
        import matplotlib.pyplot as plt

        plt.close(fig)
    else:
        FigureCanvasAgg(fig)  # attaches itself: savefig below draws with Agg, whatever the backend
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def show(fig_or_ax: Any, dpi: int = DPI) -> None:
    """Display the figure in a notebook (as a PNG output) and close it."""
    from IPython.display import Image, display

    display(Image(data=png(fig_or_ax, dpi), format="png"))


def _utc(times: pd.Series) -> np.ndarray:
    # Naive datetime64 in UTC: what matplotlib's date axis reads without a converter.
    t = pd.to_datetime(times, utc=True)
    return np.asarray(t.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"))


def _time_axis(ax: Axes, label: str = "time (UTC)") -> None:
    import datetime as dt

    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=dt.UTC, minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.UTC))
    ax.set_xlabel(label)


def _empty(ax: Axes, title: str, why: str) -> Axes:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _short(text: str, width: int = 28) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- one session ---------------------------------------------------------------------------------

def plot_session_timeline(timeline: pd.DataFrame, ax: Axes | None = None,
                          title: str | None = None) -> Axes:
    """A session's events on lanes by type, the moments its address or client changed, its
    findings per detector coloured by severity, and each revocation as a vertical line
    (`storage.queries.session_timeline`)."""
    import matplotlib.transforms as mtransforms
    from matplotlib.lines import Line2D

    events = timeline[timeline["kind"] == "event"] if not timeline.empty else timeline
    ax = axes(ax, (11.0, 0.5 * (events["what"].nunique() if not events.empty else 1) + 4.2))
    title = title or "Session timeline"
    if timeline.empty:
        return _empty(ax, title, "no events archived for this session")
    findings = timeline[timeline["kind"] == "finding"]
    revs = timeline[timeline["kind"] == "revocation"]
    # Lanes from the bottom: event types (first seen lowest), then the changes, then findings.
    lanes: list[str] = list(dict.fromkeys(events["what"]))
    changes = {}
    for column, lane in (("ip", "address changed"), ("client", "client changed")):
        if column in events and not events.empty:
            values = events[column].fillna("").astype(str)
            changed = (values != values.shift()) & (values != "") & (values.shift().notna())
            changed.iloc[0] = False
            changes[lane] = events[changed]
            lanes.append(lane)
    detectors = list(dict.fromkeys(findings["what"]))
    lanes += [f"finding: {d}" for d in detectors]
    y = {lane: i for i, lane in enumerate(lanes)}
    for lane in lanes:
        ax.axhline(y[lane], color="#eeeeee", linewidth=0.8, zorder=0)

    for what, part in events.groupby("what", sort=False):
        ax.scatter(_utc(part["time"]), [y[str(what)]] * len(part), marker="|", s=260,
                   linewidths=2.2, color=KIND_COLORS["event"], zorder=3)
    for lane, part in changes.items():
        color = KIND_COLORS["address" if lane.startswith("address") else "client"]
        ax.scatter(_utc(part["time"]), [y[lane]] * len(part), marker="D", s=60, color=color,
                   edgecolor="black", linewidths=0.6, zorder=4)
        for row in part.itertuples():
            if lane.startswith("address"):
                where = ", ".join(str(v) for v in (getattr(row, "country", ""),
                                                   getattr(row, "asn", "")) if v and str(v) != "nan")
                text = f"→ {row.ip}" + (f" ({where})" if where else "")
            else:
                text = f"→ {_short(row.client, 24)}"
            ax.annotate(text, (_utc(pd.Series([row.time]))[0], y[lane]), xytext=(6, 7),
                        textcoords="offset points", fontsize="small", color=color)
    for row in findings.itertuples():
        color = SEVERITY_COLORS.get(str(row.severity), OTHER)
        ax.scatter(_utc(pd.Series([row.time])), [y[f"finding: {row.what}"]], marker="o", s=90,
                   color=color, edgecolor="black", linewidths=0.6, zorder=5)
    blend = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for row in revs.itertuples():
        when = _utc(pd.Series([row.time]))[0]
        color = ACTION_COLORS.get(str(row.what), KIND_COLORS["revocation"])
        ax.axvline(when, color=color, linewidth=2, linestyle="--", zorder=2)
        ax.text(when, 1.01, f" {row.what} ({row.severity})", transform=blend, color=color,
                fontsize="small", ha="left", va="bottom", fontweight="bold")

    ax.set_yticks(range(len(lanes)), lanes, fontsize="small")
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    times = _utc(timeline["time"])
    span = (times.max() - times.min()) or np.timedelta64(60, "s")
    ax.set_xlim(times.min() - span * 0.04, times.max() + span * 0.3)  # room for the labels
    _time_axis(ax)
    ax.set_title(title, pad=18)
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], marker="|", linestyle="", markersize=12, markeredgewidth=2,
                      color=KIND_COLORS["event"], label="event")]
    handles += [Line2D([], [], marker="D", linestyle="", color=KIND_COLORS[k], markeredgecolor="black",
                       label=f"{k} changed") for k in ("address", "client")]
    handles += [Line2D([], [], marker="o", linestyle="", markersize=8, color=SEVERITY_COLORS[s],
                       markeredgecolor="black", label=f"finding: {s}")
                for s in SEVERITIES if s in set(findings.get("severity", ()))]
    handles += [Line2D([], [], color=ACTION_COLORS.get(str(a), KIND_COLORS["revocation"]),
                       linestyle="--", linewidth=2, label=f"decision: {a}")
                for a in dict.fromkeys(revs["what"])]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
              frameon=False)
    return ax


def plot_session_places(places: pd.DataFrame, ax: Axes | None = None,
                        title: str | None = None, min_span_deg: float = 24.0) -> Axes:
    """The session's places on a plain longitude/latitude plot (equirectangular, no map
    tiles), each labelled with its city and country and the time it was first seen, joined by
    arrows in time order with the distance and the speed that move implies
    (`storage.places.session_places`)."""
    title = title or "Where the session was used"
    if places.empty or places["lat"].notna().sum() == 0:
        return _empty(axes(ax, (9.0, 5.0)), title, "no address of this session has a known place")
    located = places[places["lat"].notna()]
    lon, lat = located["lon"], located["lat"]
    cx, cy = (lon.min() + lon.max()) / 2, (lat.min() + lat.max()) / 2
    half_x = max(lon.max() - lon.min(), min_span_deg) * 0.65
    half_y = max(lat.max() - lat.min(), min_span_deg / 2) * 0.75
    x0, x1 = max(cx - half_x, -180), min(cx + half_x, 180)
    y0, y1 = max(cy - half_y, -90), min(cy + half_y, 90)
    stretch = 1 / max(np.cos(np.radians(cy)), 0.2)  # a degree of longitude shrinks with latitude
    # A figure of the map's own shape, so the fixed aspect leaves no blank bands.
    ax = axes(ax, (10.0, float(np.clip(8.6 * (y1 - y0) * stretch / (x1 - x0), 3.2, 9.0)) + 1.4))
    # One point per place, in the order it was first reached; a return to a place is an arrow.
    stops = located[(located["lat"] != located["lat"].shift())
                    | (located["lon"] != located["lon"].shift())].reset_index(drop=True)
    visits = located.groupby(["lat", "lon"], sort=False).agg(
        first=("time", "min"), events=("time", "size"), city=("city", "first"),
        country=("country", "first"), ips=("ip", lambda s: sorted(set(s))),
        accuracy=("accuracy_km", "max")).reset_index()
    for i, row in visits.iterrows():
        color = color_of(int(i))
        ax.scatter([row["lon"]], [row["lat"]], s=60 + 12 * min(row["events"], 20), color=color,
                   edgecolor="black", linewidths=0.8, zorder=4)
        place = ", ".join(p for p in (row["city"], row["country"]) if p) or "unknown place"
        ips = ", ".join(row["ips"][:2]) + (" …" if len(row["ips"]) > 2 else "")
        ax.annotate(f"{place}\n{ips}\nfirst {row['first']:%H:%M:%S} UTC, {row['events']} events",
                    (row["lon"], row["lat"]), xytext=(8, 8), textcoords="offset points",
                    fontsize="small", color="black",
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": color, "alpha": 0.9})
    for a, b in zip(stops.iloc[:-1].itertuples(), stops.iloc[1:].itertuples(), strict=True):
        ax.annotate("", (b.lon, b.lat), (a.lon, a.lat), zorder=3,
                    arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1.5,
                                "shrinkA": 8, "shrinkB": 8, "connectionstyle": "arc3,rad=0.15"})
        elapsed = _duration((b.time - a.time).total_seconds())
        speed = "" if pd.isna(b.speed_kmh) else f"\n= {b.speed_kmh:,.0f} km/h"
        ax.annotate(f"{b.km_from_previous:,.0f} km in {elapsed}{speed}",
                    ((a.lon + b.lon) / 2, (a.lat + b.lat) / 2), xytext=(0, -14),
                    textcoords="offset points", ha="center", va="top", fontsize="small",
                    color="#444444")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect(stretch)
    ax.set(xlabel="longitude (°)", ylabel="latitude (°)")
    unknown = places.loc[places["lat"].isna(), "ip"].unique()
    if len(unknown):
        ax.text(0.01, 0.01, f"no place for {len(unknown)} address(es): "
                + ", ".join(map(str, unknown[:3])), transform=ax.transAxes, fontsize="small",
                color="gray")
    ax.set_title(f"{title}\n(GeoIP places are approximate: circles of up to "
                 f"{located['accuracy_km'].max():,.0f} km)", fontsize="medium")
    ax.grid(alpha=0.3)
    return ax


def plot_distance(places: pd.DataFrame, ax: Axes | None = None, title: str | None = None,
                  max_kmh: float = 900.0) -> Axes:
    """Distance from the session's first place over time; moves faster than `max_kmh` (an
    airliner, the impossible-travel default) marked in red with their speed."""
    ax = axes(ax, (9.0, 4.0))
    title = title or "Distance from the first place"
    located = places[places["lat"].notna()] if not places.empty else places
    if located.empty:
        return _empty(ax, title, "no address of this session has a known place")
    t = _utc(located["time"])
    ax.step(t, located["km_from_first"], where="post", color=KIND_COLORS["event"], zorder=2)
    ax.scatter(t, located["km_from_first"], color=KIND_COLORS["event"], s=25, zorder=3,
               label="event")
    fast = located["speed_kmh"] > max_kmh
    if fast.any():
        ax.scatter(t[fast.to_numpy()], located.loc[fast, "km_from_first"], s=110, marker="o",
                   facecolor="none", edgecolor=SEVERITY_COLORS["high"], linewidths=2, zorder=4,
                   label=f"moved faster than {max_kmh:,.0f} km/h")
        for when, km, kmh in zip(t[fast.to_numpy()], located.loc[fast, "km_from_first"],
                                 located.loc[fast, "speed_kmh"], strict=True):
            ax.annotate(f"{kmh:,.0f} km/h", (when, km), xytext=(-10, -4), textcoords="offset points",
                        ha="right", va="top", fontsize="small", color=SEVERITY_COLORS["high"])
    ax.set_ylim(bottom=0, top=max(100.0, float(located["km_from_first"].max()) * 1.15))
    span = (t.max() - t.min()) or np.timedelta64(60, "s")
    ax.set_xlim(t.min() - span * 0.03, t.max() + span * 0.1)
    _time_axis(ax)
    ax.set(ylabel="km from the first place", title=title)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return ax


# -- the fleet -----------------------------------------------------------------------------------

def plot_hourly(frame: pd.DataFrame, by: str, ax: Axes | None = None, value: str = "count",
                time: str = "hour", title: str | None = None, top: int = 8,
                ylabel: str | None = None, colors: dict[str, str] | None = None,
                legend: str | None = None) -> Axes:
    """Counts per hour as bars stacked by the column `by` (a tenant, detector, type or action),
    the `top` largest groups by name and the rest as "other"; e.g. one `kind` of
    `storage.fleet.activity_per_hour`, or `storage.queries.detector_stats`."""
    ax = axes(ax, (11.0, 4.5))
    title = title or f"{value} per hour by {by}"
    if frame.empty:
        return _empty(ax, title, "nothing in this range")
    totals = frame.groupby(by)[value].sum().sort_values(ascending=False, kind="stable")
    keep = list(totals.index[:top])
    groups = frame[by].where(frame[by].isin(keep), "other")
    table = (frame.assign(_group=groups).groupby([time, "_group"])[value].sum()
             .unstack(fill_value=0).sort_index())
    order = [g for g in keep if g in table.columns] + (["other"] if "other" in table.columns else [])
    hours = _utc(pd.Series(table.index))
    width = np.timedelta64(50, "m")  # bars an hour apart, with a gap
    bottom = np.zeros(len(table))
    for i, group in enumerate(order):
        color = (colors or {}).get(str(group)) or (OTHER if group == "other" else color_of(i))
        values = table[group].to_numpy(dtype=float)
        ax.bar(hours + np.timedelta64(30, "m"), values, width=width, bottom=bottom, color=color,
               label=f"{group} ({int(values.sum()):,})", edgecolor="white", linewidth=0.3)
        bottom += values
    _time_axis(ax, "hour (UTC)")
    ax.set(ylabel=ylabel or value, title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False,
              title=legend or by, title_fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_top_sources(sources: pd.DataFrame, ax: Axes | None = None, value: str = "events",
                     title: str | None = None) -> Axes:
    """The addresses that sent the most events (`storage.queries.top_sources` and its two
    wrappers): one bar each, labelled with network and country, coloured by network kind."""
    ax = axes(ax, (9.0, 0.38 * max(len(sources), 3) + 1.6))
    title = title or "Top sources"
    if sources.empty:
        return _empty(ax, title, "no such events in this range")
    rows = sources.iloc[::-1]
    kinds = list(dict.fromkeys(sources["network_kind"].fillna("").replace("", "unknown")))
    color = {k: color_of(i) for i, k in enumerate(kinds)}
    labels = [f"{r.ip}  ({', '.join(v for v in (str(r.network), str(r.country)) if v and v != 'nan') or '?'})"
              for r in rows.itertuples()]
    bar_kinds = rows["network_kind"].fillna("").replace("", "unknown")
    bars = ax.barh(range(len(rows)), rows[value], color=[color[k] for k in bar_kinds])
    ax.bar_label(bars, padding=3, fontsize="small")
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=color[k], label=k) for k in kinds], title="network",
              fontsize="small", title_fontsize="small", loc="lower right")
    ax.set(xlabel=value, title=title)
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_revocation_reasons(reasons: pd.DataFrame, ax: Axes | None = None,
                            title: str | None = None) -> Axes:
    """Revocations per detector, stacked by the action decided
    (`storage.fleet.revocation_reasons`); the severities each detector reported beside it."""
    ax = axes(ax, (9.0, 0.45 * max(reasons["detector"].nunique() if not reasons.empty else 1, 3)
                   + 1.8))
    title = title or "Why decisions were taken: revocations per detector and action"
    if reasons.empty:
        return _empty(ax, title, "no revocations in this range")
    table = reasons.pivot_table(index="detector", columns="action", values="revocations",
                                aggfunc="sum", fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values(kind="stable").index]
    left = np.zeros(len(table))
    for i, action in enumerate(sorted(table.columns, key=lambda a: list(ACTION_COLORS).index(a)
                                      if a in ACTION_COLORS else 99)):
        values = table[action].to_numpy(dtype=float)
        ax.barh(range(len(table)), values, left=left, label=action,
                color=ACTION_COLORS.get(action, color_of(i)))
        left += values
    severities = reasons.groupby("detector")["severity"].agg(
        lambda s: "/".join(v for v in SEVERITIES if v in set(s)))
    for i, detector in enumerate(table.index):
        ax.text(left[i], i, f"  {int(left[i])}  ({severities[detector]})", va="center",
                fontsize="small")
    ax.set_yticks(range(len(table)), list(table.index), fontsize="small")
    ax.set(xlabel="revocations the detector took part in (severity it reported)", title=title)
    ax.margins(x=0.25)
    ax.legend(title="action", fontsize="small", title_fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_latency(latency: pd.DataFrame, ax: Axes | None = None, column: str = "decided_s",
                 title: str | None = None) -> Axes:
    """Histogram of event -> decision seconds (`storage.fleet.decision_latency`) with its
    ECDF on the right axis and the median and 95th percentile marked."""
    ax = axes(ax, (9.0, 4.5))
    title = title or "Event → decision latency"
    values = latency[column].dropna().to_numpy(dtype=float) if not latency.empty else np.array([])
    if not len(values):
        return _empty(ax, title, "no revocations in this range")
    low, high = min(0.0, float(values.min())), max(float(values.max()), 1.0)
    width = next((w for w in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
                  if (high - low) / w <= 40), (high - low) / 40)
    bins = np.arange(np.floor(low / width) * width, high + width, width)
    ax.hist(values, bins=list(bins), color=KIND_COLORS["event"], alpha=0.75, label="revocations")
    ecdf = ax.twinx()
    x = np.sort(values)
    ecdf.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color="black", linewidth=1.2,
              label="share decided within (ECDF)")
    ecdf.set_ylim(0, 1.02)
    ecdf.set_ylabel("share of revocations decided within")
    for q, style in ((0.5, "--"), (0.95, ":")):
        v = float(np.quantile(values, q))
        ax.axvline(v, color="black", linestyle=style, label=f"p{int(q * 100)} {v:.1f} s")
    ax.set(xlabel="seconds from the event to the decision (decided_at is kept to the second)",
           ylabel="revocations", title=f"{title} ({len(values)} revocations)")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = ecdf.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="center right", fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_detector_volume(stats: pd.DataFrame, ax: Axes | None = None, value: str = "findings",
                         time: str = "hour", title: str | None = None, top: int = 8) -> Axes:
    """One line per detector over time (`storage.queries.detector_stats`: findings,
    revocations, sessions...), the `top` busiest by name."""
    ax = axes(ax, (11.0, 4.5))
    title = title or f"{value} per detector"
    if stats.empty:
        return _empty(ax, title, "nothing in this range")
    busiest = stats.groupby("detector")[value].sum().sort_values(ascending=False, kind="stable")
    table = stats.pivot_table(index=time, columns="detector", values=value, aggfunc="sum",
                              fill_value=0).sort_index()
    # Every bucket in the range, so a quiet hour reads as zero, not as a line across it.
    step = pd.Timedelta(hours=1) if time == "hour" else pd.Timedelta(days=1)
    table = table.reindex(pd.date_range(table.index.min(), table.index.max(), freq=step),
                          fill_value=0)
    t = _utc(pd.Series(table.index))
    for i, detector in enumerate(busiest.index[:top]):
        if busiest[detector] == 0:
            continue
        ax.plot(t, table[detector], marker="o", markersize=3, color=color_of(i),
                label=f"{detector} ({int(busiest[detector]):,})")
    _time_axis(ax, f"{time} (UTC)")
    ax.set(ylabel=f"{value} per {time}", title=title)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_benign_rate(verdicts: pd.DataFrame, ax: Axes | None = None,
                     title: str | None = None) -> Axes:
    """Per detector, the analysts' verdicts on its findings and revocations: confirmed and
    dismissed bars, labelled with the benign-verdict rate (`storage.fleet.detector_verdicts`)."""
    judged = verdicts[(verdicts["confirmed"] + verdicts["dismissed"]) > 0] if not verdicts.empty \
        else verdicts
    ax = axes(ax, (9.0, 0.45 * max(len(judged), 3) + 1.6))
    title = title or "Analysts' verdicts per detector"
    if judged.empty:
        return _empty(ax, title, "no verdicts in this range")
    judged = judged.sort_values("detector", ascending=False)
    y = np.arange(len(judged))
    ax.barh(y, judged["confirmed"], color=VERDICT_COLORS["confirmed"], label="confirmed (a hijack)")
    ax.barh(y, judged["dismissed"], left=judged["confirmed"], color=VERDICT_COLORS["dismissed"],
            label="dismissed (benign)")
    for i, r in enumerate(judged.itertuples()):
        ax.text(r.confirmed + r.dismissed, i, f"  {r.benign_rate:.0%} benign", va="center",
                fontsize="small")
    ax.set_yticks(y, list(judged["detector"]), fontsize="small")
    ax.set(xlabel="verdicts", title=title)
    ax.margins(x=0.25)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return ax


def plot_threshold_sweep(sweep: pd.DataFrame, ax: Axes | None = None, param: str | None = None,
                         current: float | None = None, title: str | None = None,
                         columns: Sequence[tuple[str, str, str]] | None = None) -> Axes:
    """Decisions against a detector threshold (`sessionwatch.tuning.threshold_sweep`): every
    decision, the confirmed ones, the benign ones (dismissed) and the not confirmed ones
    (dismissed or without a verdict: at most that many are benign);
    `current` (the policy's value today) as a vertical line."""
    ax = axes(ax, (9.0, 4.8))
    param = param or str(sweep.attrs.get("param", "threshold"))
    title = title or f"Decisions against {param}"
    if sweep.empty:
        return _empty(ax, title, "no values swept")
    columns = columns or (
        ("decisions", "every decision", "black"),
        ("confirmed", "confirmed hijack", VERDICT_COLORS["confirmed"]),
        ("not_confirmed", "not confirmed (dismissed or no verdict)", VERDICT_COLORS["none"]),
        ("benign", "benign (dismissed)", VERDICT_COLORS["dismissed"]))
    x = sweep["value"].to_numpy(dtype=float)
    for column, label, color in columns:
        if column in sweep:
            ax.plot(x, sweep[column], marker="o", color=color, label=label,
                    linewidth=2.2 if column == "decisions" else 1.6,
                    linestyle="--" if column == "not_confirmed" else "-")
    if current is not None:
        ax.axvline(float(current), color="gray", linestyle=":", linewidth=1.5,
                   label=f"policy today: {current:g}")
    ax.set(xlabel=param, ylabel="decisions (subject and action)", title=title)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3)
    return ax


def plot_before_after(changes: pd.DataFrame, ax: Axes | None = None,
                      title: str | None = None) -> Axes:
    """Per detector, the revocations it took part in as archived and under another policy
    (`sessionwatch.tuning.detector_changes`), side by side, with the change."""
    ax = axes(ax, (9.0, 0.5 * max(len(changes), 3) + 1.8))
    title = title or "Revocations per detector: archived and under the new policy"
    if changes.empty:
        return _empty(ax, title, "no revocations on either side")
    rows = changes.sort_values("detector", ascending=False)
    y = np.arange(len(rows))
    ax.barh(y + 0.2, rows["before"], height=0.4, color="#9e9e9e", label="archived (before)")
    ax.barh(y - 0.2, rows["new"], height=0.4, color=KIND_COLORS["event"], label="new policy")
    for i, r in enumerate(rows.itertuples()):
        if r.change:
            color = SEVERITY_COLORS["high"] if r.change > 0 else VERDICT_COLORS["dismissed"]
            ax.text(max(r.before, r.new), i, f"  {r.change:+d}", va="center", fontsize="small",
                    color=color, fontweight="bold")
    ax.set_yticks(y, list(rows["detector"]), fontsize="small")
    ax.set(xlabel="revocations the detector took part in", title=title)
    ax.margins(x=0.12)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return ax
