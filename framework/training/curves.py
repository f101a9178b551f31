"""Training curves from metrics.jsonl: train loss, eval loss and the task's primary metric vs
optimizer step, one panel each; one line per run (a run's own curves.png, or `ft report --plot`
over several). The evaluation a run reports (its kept adapter's: with train.keep_best the best,
not the last) is marked on each eval panel. matplotlib is optional (the `report` extra): without
it, nothing is drawn."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framework.store.run_dir import CURVES_FILE, read_metrics, read_summary

log = logging.getLogger("ft")

Series = list[tuple[int, float]]  # (optimizer step, value)


def run_series(run_dir: Path, primary: str | None = None) -> dict[str, Series]:
    """{'train loss', 'eval loss', PRIMARY} -> points, read from a run's metrics.jsonl (the
    primary metric from its summary.json unless given)."""
    summary = read_summary(run_dir) or {}
    primary = primary or summary.get("primary_metric") or "eval_loss"
    series: dict[str, Series] = {"train loss": [], "eval loss": []}
    if primary != "eval_loss":
        series[primary] = []
    for record in read_metrics(run_dir):
        step, split = record.get("step"), record.get("split")
        if split == "train" and isinstance(record.get("loss"), (int, float)):
            series["train loss"].append((step, record["loss"]))
        elif split == "eval":
            if isinstance(record.get("eval_loss"), (int, float)):
                series["eval loss"].append((step, record["eval_loss"]))
            if primary in series and isinstance(record.get(primary), (int, float)):
                series[primary].append((step, record[primary]))
    # A resumed run logs some steps twice: keep the last value of each step.
    return {name: sorted(dict(points).items()) for name, points in series.items()}


def kept_points(run_dir: Path, primary: str | None = None) -> dict[str, tuple[int, float]]:
    """{'eval loss', PRIMARY} -> (step, value) of the evaluation the run reports as its result
    (summary.json's final and final_step: the kept adapter's); {} for an unfinished run."""
    summary = read_summary(run_dir) or {}
    final, step = summary.get("final") or {}, summary.get("final_step", summary.get("steps"))
    primary = primary or summary.get("primary_metric") or "eval_loss"
    if step is None:
        return {}
    keys = {"eval loss": "eval_loss", primary: primary}
    return {
        panel: (step, final[key])
        for panel, key in keys.items()
        if isinstance(final.get(key), (int, float))
    }


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_runs(runs: Sequence[tuple[str, Path]], output: Path) -> Path | None:
    """Draw the curves of each (label, run_dir) into one PNG; None (and one log line) when
    matplotlib is not installed."""
    if not plotting_available():
        log.info(
            "curves: matplotlib is not installed (pip install 'ft-peft[report]'); no %s written",
            Path(output).name,
        )
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure = draw_runs(runs)
    output = Path(output)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


def draw_runs(runs: Sequence[tuple[str, Path]]) -> Any:
    """The matplotlib figure of plot_runs: one panel per series, one line per run, and each
    run's reported (kept) evaluation marked with a star."""
    import matplotlib.pyplot as plt

    all_series = [(label, run_series(run_dir), kept_points(run_dir)) for label, run_dir in runs]
    panels: list[str] = []
    for _, series, _ in all_series:
        panels += [name for name in series if name not in panels]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for label, series, kept in all_series:
            points = series.get(panel) or []
            if points:
                steps, values = zip(*points)
                (line,) = axis.plot(
                    steps,
                    values,
                    marker="o" if len(points) < 30 else None,
                    markersize=3,
                    label=label,
                )
                if panel in kept:  # the kept adapter's evaluation (keep_best: the best)
                    step, value = kept[panel]
                    name = "kept" if len(runs) == 1 else f"{label}: kept"
                    axis.plot(
                        [step],
                        [value],
                        marker="*",
                        markersize=11,
                        linestyle="none",
                        color=line.get_color(),
                        label=f"{name} (step {step})",
                    )
        if len(runs) == 1 and any(panel in kept for _, _, kept in all_series):
            axis.legend(fontsize=7)
        axis.set_title(panel)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def write_run_curves(run_dir: Path) -> Path | None:
    """RUN_DIR/curves.png at the end of training; a failure to draw never fails the run."""
    try:
        return plot_runs([(Path(run_dir).name, Path(run_dir))], Path(run_dir) / CURVES_FILE)
    except Exception as error:  # a plot is a convenience: report it, keep the trained run
        log.warning("curves: could not draw %s (%s)", CURVES_FILE, error)
        return None
