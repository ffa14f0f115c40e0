"""The experiments' figures, in the study's style (and `knifejax.plots`'): per-epoch loss on a log scale beside
validation MAP@5, one line per setting, shaded ± std bands when there are several seeds.

Each public function here returns a figure maker `(results, out_dir) -> path`, so a script declares its
figures as `figures=(curves("fig1_lr.png"),)`. Figures are drawn from results.json alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps, ticker
from matplotlib.figure import Figure

from experiments.presets import PRESETS, format_lr
from experiments.tables import by_setting
from knifejax.data.pipeline import train_steps_per_epoch
from knifejax.metrics import chance_map_at_k
from knifejax.plots import save_figure

Style = Callable[[str, dict], dict]  # (label, overrides) -> matplotlib line keywords
COLOURS = colormaps["tab10"].colors
MARKERS = "osD^vP*Xh<>"


def _series(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs from 1, mean over seeds, std over seeds) of one per-epoch metric."""
    length = min(len(r["history"]) for r in runs)
    values = np.array([[np.nan if h[key] is None else h[key] for h in r["history"][:length]] for r in runs], float)
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(length)
    return np.arange(1, length + 1), values.mean(axis=0), std


def chance_map5(document: dict) -> float | None:
    """MAP@5 of a uniformly random ranking over the classes of the first run that lists them."""
    for run in document["runs"]:
        classes = Path(run["run_dir"]) / "classes.json"
        if classes.exists():
            return chance_map_at_k(len(json.loads(classes.read_text())), 5)
    return None


def _save(fig, path: Path, title: str) -> Path:
    """Title the figure and write it as a PNG."""
    fig.suptitle(title)
    return save_figure(fig, path)


def log_axis(ax) -> None:
    """A log-scale y axis labelled with plain numbers (1.5, 2, 3 rather than 1.5 × 10^0); within one decade,
    ticks at 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 of it, all labelled. Call after plotting."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    plain = ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
    if high / low < 10:
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.yaxis.set_major_formatter(plain)


def _tick(key: str, value) -> str:
    if key == "lr":
        return format_lr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_style(labels: list[str]) -> Style:
    index = {label: i for i, label in enumerate(labels)}
    return lambda label, overrides: dict(color=COLOURS[index[label] % 10], marker=MARKERS[index[label] % len(MARKERS)])


def paired_style(colour_key: str, dash_key: str, dashes: dict[str, str]) -> Callable[[list[str], dict], Style]:
    """Colour by the value of one override (e.g. the learning rate), line style by another (the schedule)."""

    def make(labels: list[str], settings: dict) -> Style:
        values = list(dict.fromkeys(settings[label]["overrides"][colour_key] for label in labels))

        def style(label: str, overrides: dict) -> dict:
            i = values.index(overrides[colour_key])
            return dict(color=COLOURS[i % 10], marker=MARKERS[i % len(MARKERS)],
                        linestyle=dashes.get(overrides[dash_key], "-"))  # fmt: skip

        return style

    return make


def curves(filename: str, title: str | None = None, style=None) -> Callable[[dict, Path], Path]:
    """Two panels: training loss per epoch (log scale) and validation MAP@5 per epoch, one line per setting."""

    def draw(document: dict, out: Path) -> Path:
        groups = by_setting(document)
        labels = list(groups)
        line_style = style(labels, document["settings"]) if style else default_style(labels)
        fig = Figure(figsize=(11 if len(labels) <= 6 else 12.5, 4.4), layout="constrained")
        ax_loss, ax_map = fig.subplots(1, 2)
        top = 0.0
        for label, runs in groups.items():
            kw = line_style(label, document["settings"][label]["overrides"])
            for ax, key in ((ax_loss, "train_loss"), (ax_map, "val_map@5")):
                x, mean, std = _series(runs, key)
                ax.plot(x, mean, label=label, markersize=4, **kw)
                if len(runs) > 1:
                    ax.fill_between(x, mean - std, mean + std, color=kw["color"], alpha=0.15, linewidth=0)
                if key == "val_map@5":
                    top = max(top, float(np.nanmax(mean + std)))
        ax_loss.set(xlabel="epoch", ylabel="training cross-entropy (log scale)", title="Loss")
        log_axis(ax_loss)
        chance = chance_map5(document)
        if chance is not None:
            ax_map.axhline(chance, color="grey", linestyle=":", linewidth=1.2, label="chance")
        ax_map.set(xlabel="epoch", ylabel="validation MAP@5", title="MAP@5", ylim=(0, min(1.0, 1.1 * top + 0.03)))
        seeds = len(document["seeds"])
        for ax in (ax_loss, ax_map):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        where = dict(loc="best") if len(labels) <= 6 else dict(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        ax_map.legend(fontsize=8, title=f"mean ± std of {seeds} seeds" if seeds > 1 else None, title_fontsize=8,
                      **where)  # fmt: skip
        return _save(fig, out / filename, title or document["title"])

    return draw


def lr_schedules(filename: str, t_max_periodic: int = 20) -> Callable[[dict, Path], Path]:
    """The learning rate over the steps of a run, for the preset's base rate: constant, per-step cosine over
    the whole run, and the study's later `cosine-periodic` with T_max=20 steps; the rate each trained run
    logged at the end of each epoch is marked on top."""

    def draw(document: dict, out: Path) -> Path:
        from knifejax.train.optim import make_schedule

        base = PRESETS[document["preset"]["name"]].config().lr
        settings = document["settings"]
        runs = [r for r in document["runs"] if settings[r["setting"]]["overrides"].get("lr") == base]
        if not runs:  # the base rate is not among the settings: take the first one's
            first = next(iter(settings))
            base = settings[first]["overrides"]["lr"]
            runs = [r for r in document["runs"] if settings[r["setting"]]["overrides"].get("lr") == base]
        per_epoch, total = _planned_steps(runs[0], settings[runs[0]["setting"]]["config"])
        steps = np.arange(total)
        fig = Figure(figsize=(8, 4.2), layout="constrained")
        ax = fig.subplots()
        curves_ = (
            ("constant", make_schedule(base, "constant"), "-"),
            ("cosine (T_max = whole run, per step)", make_schedule(base, "cosine", total_steps=total), "-"),
            (f"cosine-periodic (T_max = {t_max_periodic} steps)",
             make_schedule(base, "cosine-periodic", t_max=t_max_periodic), "--"),
        )  # fmt: skip
        for i, (name, schedule, dash) in enumerate(curves_):
            ax.plot(steps, np.asarray([schedule(s) for s in steps], float), dash, color=COLOURS[i], label=name,
                    linewidth=1.6 if i < 2 else 1.0)  # fmt: skip
        for run in runs:
            schedule = settings[run["setting"]]["overrides"].get("schedule")
            colour = COLOURS[0] if schedule == "constant" else COLOURS[1]
            ax.plot([h["step"] - 1 for h in run["history"]], [h["lr"] for h in run["history"]], "o", color=colour,
                    markersize=6, markerfacecolor="none")  # fmt: skip
        ax.plot([], [], "o", color="grey", markerfacecolor="none", label="rate logged by the runs, end of each epoch")
        for epoch in range(1, total // per_epoch):
            ax.axvline(epoch * per_epoch, color="grey", linewidth=0.5, alpha=0.4)
        ax.set(xlabel=f"step ({per_epoch} per epoch)", ylabel="learning rate", ylim=(0, base * 1.15),
               title=f"Learning rate per step, base rate {base:g}")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        return save_figure(fig, out / filename)

    return draw


def _planned_steps(run: dict, config: dict) -> tuple[int, int]:
    """(steps per epoch, steps of the whole run) that the run's schedule spans, also when --max-steps cut it
    short: from the number of training images its data report counted."""
    items = json.loads((Path(run["run_dir"]) / "data_report.json").read_text())["train"]["items"]
    per_epoch = train_steps_per_epoch(items, config["batch_size"])
    return per_epoch, per_epoch * config["epochs"]


def final_bars(filename: str, x_key: str, series_key: str, title: str | None = None) -> Callable[[dict, Path], Path]:
    """Grouped bars of the final epoch's training loss (log scale) and validation MAP@5: one group per value
    of override `x_key` (e.g. the learning rate), one bar per value of `series_key` (e.g. the schedule)."""

    def draw(document: dict, out: Path) -> Path:
        groups = by_setting(document)
        settings = document["settings"]
        xs = list(dict.fromkeys(settings[label]["overrides"][x_key] for label in groups))
        series = list(dict.fromkeys(settings[label]["overrides"][series_key] for label in groups))
        width = 0.8 / len(series)
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, key, name in ((axes[0], "train_loss", "final training loss (log scale)"),
                              (axes[1], "val_map@5", "final validation MAP@5")):  # fmt: skip
            for j, value in enumerate(series):
                means, errors = [], []
                for x in xs:
                    runs = [r for label, rs in groups.items() for r in rs
                            if settings[label]["overrides"][x_key] == x and settings[label]["overrides"][series_key] == value]  # fmt: skip
                    finals = [r["history"][-1][key] for r in runs]
                    means.append(np.mean(finals) if finals else np.nan)
                    errors.append(np.std(finals, ddof=1) if len(finals) > 1 else 0.0)
                positions = np.arange(len(xs)) + (j - (len(series) - 1) / 2) * width
                yerr = errors if len(document["seeds"]) > 1 else None
                bars = ax.bar(positions, means, width, yerr=yerr, capsize=3, color=COLOURS[j], label=str(value))
                ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize=7, padding=2)
            ax.set_xticks(np.arange(len(xs)), [_tick(x_key, x) for x in xs])
            ax.set(xlabel=x_key, ylabel=name)
            if key == "train_loss":
                log_axis(ax)
            else:
                ax.set_ylim(0, 1.05)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8, title=series_key, title_fontsize=8)
        return _save(fig, out / filename, title or document["title"])

    return draw
