"""The markdown table of an experiment: one row per setting, mean ± std over seeds, the preset stated."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.study_results import Reading
from knifejax.atomic_write import write_text_atomically


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[dict], float | None]  # one run's result -> number (None: not available)
    fmt: Callable[[float], str] = "{:.3f}".format


def _duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)} min {secs:04.1f} s" if minutes >= 1 else f"{secs:.1f} s"


def _last(key: str) -> Callable[[dict], float | None]:
    return lambda run: run["history"][-1].get(key) if run["history"] else None


def _test(key: str) -> Callable[[dict], float | None]:
    return lambda run: run["test"][key] if run.get("test") else None


def _best_val_map5(run: dict) -> float | None:
    return max((h["val_map@5"] for h in run["history"]), default=None)


def _train_images_per_s(run: dict) -> float | None:
    """Training throughput over the epochs after the first (whose time includes compiling the step)."""
    epochs = run["history"][1:] or run["history"]
    seconds = sum(h["train_seconds"] for h in epochs)
    images = sum(h["images_per_s"] * h["train_seconds"] for h in epochs)
    return images / seconds if seconds else None


def _millions(count: float) -> str:
    return f"{count / 1e6:.2f} M"


def _model(key: str) -> Callable[[dict], float | None]:
    return lambda run: run["model"][key] if run.get("model") else None


TRAIN_LOSS = Column("final train loss", _last("train_loss"), "{:.4f}".format)
VAL_LOSS = Column("final val loss", _last("val_loss"), "{:.4f}".format)
VAL_MAP5 = Column("final val MAP@5", _last("val_map@5"))
BEST_VAL_MAP5 = Column("best val MAP@5", _best_val_map5)
TEST_MAP5 = Column("test MAP@5", _test("map@5"))
TEST_MAP1 = Column("test MAP@1", _test("map@1"))
WALL = Column("wall time per run", lambda run: run["wall_seconds"], _duration)
IMAGES_PER_S = Column("train img/s (epochs 2+)", _train_images_per_s, "{:.1f}".format)
PARAMETERS = Column("parameters", _model("parameters"), _millions)
TRAINABLE = Column("trainable parameters", _model("trainable_parameters"), _millions)
DEFAULT_COLUMNS = (TRAIN_LOSS, VAL_LOSS, VAL_MAP5, BEST_VAL_MAP5, TEST_MAP5, TEST_MAP1)


# The study's numbers a table can set beside a row: Reading field -> column header.
STUDY_COLUMNS = {"map5": "study MAP@5", "map1": "study MAP@1", "loss": "study final train loss",
                 "minutes": "study V100 time"}  # fmt: skip


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...] = DEFAULT_COLUMNS
    # the study's reading of a setting, from experiments.study_results: (label, overrides) -> Reading or None
    reference: Callable[[str, dict], Reading | None] | None = None
    reference_note: str = "real photos"  # what the study's columns were measured on, for their headers

    def study_columns(self, settings: dict) -> list[tuple[str, str]]:
        """(Reading field, header) of each study number some row of `settings` has."""
        readings = [self.reference(label, s["overrides"]) for label, s in settings.items()] if self.reference else []
        return [(key, f"{header} ({self.reference_note})") for key, header in STUDY_COLUMNS.items()
                if any(r is not None and getattr(r, key) is not None for r in readings)]  # fmt: skip


def _study_cell(reading: Reading | None, key: str) -> str:
    value = None if reading is None else getattr(reading, key)
    if value is None:
        return "—"
    if key == "minutes":
        return f"{value / 60:g} h" if value >= 60 else f"{value:g} min"
    epochs = "" if reading.epochs == 20 else f" ({reading.epochs} epochs)"
    return (f"{value:g}" if key == "loss" else f"{value:.3f}") + epochs


def by_setting(document: dict) -> dict[str, list[dict]]:
    """Run results grouped by setting label, in the order the experiment declares its settings."""
    groups = {label: [] for label in document["settings"]}
    for run in document["runs"]:
        groups[run["setting"]].append(run)
    return groups


def cell(values: list[float | None], fmt: Callable[[float], str]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(set(values)) == 1:  # one seed, or a value seeds do not change (a parameter count)
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"


def write_table(experiment, document: dict, path: Path) -> Path:
    table: Table = experiment.table
    seeds = len(document["seeds"])
    study = table.study_columns(document["settings"])
    header = ["setting", *(c.header for c in table.columns), *(h for _, h in study)]
    lines = [
        f"# {document['title']}",
        "",
        experiment.about,
        "",
        document["preset"]["description"],
        "",
        (f"{seeds} seeds per setting (0..{seeds - 1}): each cell is the mean ± sample standard deviation over seeds."
         if seeds > 1 else "One seed per setting (seed 0): no error bars; differences of a few hundredths are noise "
         "(`--seeds N` for mean ± std)."),  # fmt: skip
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for label, runs in by_setting(document).items():
        row = [label, *(cell([c.value(r) for r in runs], c.fmt) for c in table.columns)]
        if study:
            reading = table.reference(label, document["settings"][label]["overrides"])
            row += [_study_cell(reading, key) for key, _ in study]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Columns: train loss is the mean over the last epoch's augmented batches; val is the validation set "
              "after each epoch; test is the final model once, at the end; wall time covers the whole run "
              "(data, compilation, training, evaluation, checkpoints)."]  # fmt: skip
    notes = [*experiment.notes, *document["preset"]["notes"]]
    if experiment.study_reference:
        notes.append(experiment.study_reference)
    reused = [r for r in document["runs"] if r["status"] == "reused"]
    if reused:
        notes.append(f"{len(reused)} run(s) reused from another experiment's folder (identical configuration): "
                     + ", ".join(f"`{r['run_dir']}`" for r in reused))  # fmt: skip
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    lines += ["", f"Command: `{document['command'].strip()}`; total wall time of this invocation "
              f"{_duration(document['wall_seconds'])}.", ""]  # fmt: skip
    write_text_atomically(path, "\n".join(lines))
    return path
