"""``hub demo``: the main job on an embedded default, for a newcomer's first run."""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.table import Table

from hub.progress import counting
from hub.settings import get_settings
from synthetic_data import summary
from synthetic_data.generator import SynthConfig, generate

# wide enough for the prevalence table when piped (rich assumes 80 columns then)
out = Console(width=None if sys.stdout.isatty() else 132)


def _fmt(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.1f}"


def run_demo(*, patients: int, dummy_patients: int, seed: int) -> None:
    home = get_settings().home
    out.rule("[bold]Health data hub demo")
    out.print(f"HUB_HOME = {home.resolve()}")
    started = time.perf_counter()
    populations = (("real", patients, False), ("dummy", dummy_patients, True))
    for name, n, dummy in populations:
        config = SynthConfig(patients=n, seed=seed, dummy=dummy)
        with counting(n, f"{name} population") as advance:
            generate(config, home / "synthetic" / name, on_chunk=advance)
    out.print(f"generated both populations in {time.perf_counter() - started:.1f} s\n")

    folder = home / "synthetic" / "real"
    con = summary.connect(folder)
    counts = Table(title="Rows per table (real population)")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for table, rows in summary.row_counts(con).items():
        counts.add_row(table, f"{rows:,}")
    out.print(counts)

    prev = Table(
        title="Recorded prevalence at the end of the window (%), by IMD decile (1 = most deprived)"
    )
    prev.add_column("condition")
    prev.add_column("age")
    prev.add_column("all", justify="right")
    prev.add_column("target", justify="right")
    for d in range(1, 11):
        prev.add_column(str(d), justify="right")
    for p in summary.prevalence(con, summary.window_end(folder)):
        prev.add_row(
            p.condition,
            f"{p.min_age}+",
            _fmt(p.percent),
            _fmt(p.target_percent),
            *(_fmt(x) for x in p.by_imd_decile),
        )
    out.print(prev)

    s = summary.study(con)
    if s is None:
        out.print("No prediabetes index events: the study needs a larger population.")
        return
    out.print("[bold]Embedded study: NHS Diabetes Prevention Programme after prediabetes")
    out.print(
        f"  {s.index_events:,} new prediabetes diagnoses; {s.referred_percent:.0f}% referred "
        f"(confounded by age, BMI and deprivation); {s.complete_follow_up:,} with 2-year follow-up"
    )
    out.print(
        f"  true average effect on 2-year diabetes risk: {s.true_effect_risk:+.1f} points; "
        f"naive referred-vs-not difference: {s.naive_effect_risk:+.1f} points"
    )
    out.print(
        f"  heterogeneity: the 10% who benefit most {s.best_decile_effect:+.1f} points, "
        f"the 10% who benefit least {s.worst_decile_effect:+.1f} points"
    )
    out.print(f"  ground truth (never loaded into a release): {folder / 'ground_truth'}")
