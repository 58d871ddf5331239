"""Inline SVG charts, pure: numbers in, escaped markup out (no script, no library, no CDN).

>>> import datetime as dt
>>> t = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
>>> svg = spend_chart([(t, 0.5), (t + dt.timedelta(hours=1), 0.25)], budget=1.0,
...                   now=t + dt.timedelta(hours=2), label="p-1 <b>")
>>> svg.startswith("<svg") and "p-1 &lt;b&gt;" in svg and "<b>" not in svg
True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

from markupsafe import Markup

WIDTH: Final = 640
HEIGHT: Final = 220
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 16, 40


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def spend_chart(
    spends: Sequence[tuple[dt.datetime, float]],
    *,
    budget: float,
    now: dt.datetime,
    label: str,
) -> Markup:
    """Cumulative ε spent over time as a step line, with the budget as a dashed line."""
    spends = sorted(spends)
    start = spends[0][0] if spends else now - dt.timedelta(hours=1)
    end = max(now, spends[-1][0] if spends else now)
    if end <= start:
        end = start + dt.timedelta(minutes=1)
    total = sum(e for _, e in spends)
    top = max(budget, total, 1e-9) * 1.05
    span = (end - start).total_seconds()
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: dt.datetime) -> float:
        return LEFT + plot_w * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    path = [f"M{x(start):.1f},{y(0):.1f}"]
    dots = []
    cumulative = 0.0
    for moment, epsilon in spends:
        path.append(f"H{x(moment):.1f}")
        cumulative += epsilon
        path.append(f"V{y(cumulative):.1f}")
        dots.append(
            Markup(
                '<circle cx="{:.1f}" cy="{:.1f}" r="3" class="dot">'
                "<title>{}: ε {:.4g} (total {:.4g})</title></circle>"
            ).format(x(moment), y(cumulative), _stamp(moment), epsilon, cumulative)
        )
    path.append(f"H{x(end):.1f}")
    ticks = []
    for value in (0.0, budget / 2, budget):
        ticks.append(
            Markup(
                '<line x1="{l}" x2="{r}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                '<text x="{tx}" y="{ty:.1f}" class="tick" text-anchor="end">{v:.3g}</text>'
            ).format(l=LEFT, r=WIDTH - RIGHT, y=y(value), tx=LEFT - 6, ty=y(value) + 4, v=value)
        )
    summary = (
        f"ε spent: {total:.4g} of {budget:.4g} in {len(spends)} spends "
        f"between {_stamp(start)} and {_stamp(end)}"
    )
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" '
        'role="img" aria-label="{aria}">'
        "<title>{title}</title><desc>{desc}</desc>"
        "{ticks}"
        '<line x1="{l}" x2="{r}" y1="{by:.1f}" y2="{by:.1f}" class="budget"/>'
        '<text x="{r}" y="{bty:.1f}" class="budget-label" text-anchor="end">budget ε {b:.3g}</text>'
        '<path d="{path}" class="spent"/>'
        "{dots}"
        '<text x="{l}" y="{xy}" class="tick">{first}</text>'
        '<text x="{r}" y="{xy}" class="tick" text-anchor="end">{last}</text>'
        '<text x="14" y="{my:.1f}" class="tick" transform="rotate(-90 14 {my:.1f})" '
        'text-anchor="middle">ε spent</text>'
        "</svg>"
    ).format(
        w=WIDTH,
        h=HEIGHT,
        aria=f"Privacy budget spent over time, {label}",
        title=f"Privacy budget spent over time: {label}",
        desc=summary,
        ticks=Markup("").join(ticks),
        l=LEFT,
        r=WIDTH - RIGHT,
        by=y(budget),
        bty=y(budget) - 5,
        b=budget,
        path=" ".join(path),
        dots=Markup("").join(dots),
        xy=HEIGHT - BOTTOM + 18,
        first=_stamp(start),
        last=_stamp(end),
        my=TOP + plot_h / 2,
    )


__all__ = ["spend_chart"]
