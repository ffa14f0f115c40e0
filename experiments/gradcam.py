"""Fig. 9 of the study: Grad-CAM on correct and failed test predictions, for each architecture of
compare_architectures (its runs with the same flags are reused, missing ones trained first).

For each architecture's seed-0 run (its final model) every test image is explained for its predicted class at
the family's default layer (`model.grad_cam_layer`: the last feature map before pooling; a ViT's last block).
The figure shows, per architecture, its most confident correct and most confident failed predictions; each
architecture's folder also holds one overlay PNG per shown image and a captioned grid of each kind.

    python -m experiments.gradcam                 # quick preset: reuses compare_architectures' quick runs
    python -m experiments.gradcam --help
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from experiments import compare_architectures, runner
from experiments.members import run_members, write_results
from knifejax.atomic_write import write_text_atomically
from knifejax.ensemble import load_member
from knifejax.explain.batch import Explanations, explain_images, write_explanations
from knifejax.explain.overlay import overlay
from knifejax.plots import save_figure
from knifejax.train.data_setup import prepare_data

PER_KIND = 3  # images of each kind (correct, failed) per architecture in the figure

EXPERIMENT = runner.Experiment(
    name="gradcam",
    title="Fig. 9 — Grad-CAM of correct and failed test predictions",
    about="Where each architecture looks: Grad-CAM of the predicted class on its most confident correct and most "
    "confident wrong test predictions.",
    settings=compare_architectures.settings,
    table=compare_architectures.EXPERIMENT.table,
)


def explain_run(run: dict, out: Path, log) -> tuple[Explanations, list[str], dict]:
    """Grad-CAM of every test (else validation) image of one run; writes its overlays and grids into `out`."""
    member = load_member(run["run_dir"], "latest")
    prepared = prepare_data(member.config, member.size, log)
    split, role = (prepared.test, "test") if prepared.test is not None else (prepared.val, "validation")
    images = split.data.read(split.indices)
    explained = explain_images(member.model, images, member.mean, member.std, split.labels)
    layer = member.model.grad_cam_layer
    correct = int((explained.predicted == explained.labels).sum())
    for which in ("correct", "failed"):
        if len(explained.select(which)):
            write_explanations(explained, member.class_names, out / which, which=which, limit=PER_KIND * 2,
                               title=f"{run['setting']}: most confident {which} ({layer})")  # fmt: skip
    summary = {"setting": run["setting"], "run_dir": run["run_dir"], "model": member.config.model, "layer": layer,
               "images": int(len(images)), "split": role, "correct": correct, "failed": int(len(images)) - correct,
               "shown": {w: explained.select(w, PER_KIND).tolist() for w in ("correct", "failed")}}  # fmt: skip
    return explained, member.class_names, summary


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def draw(explained: list[tuple[Explanations, list[str], dict]], path: Path, title: str) -> Path:
    """One row per architecture: its correct predictions, then its failed ones, each as a Grad-CAM overlay."""
    rows, columns = len(explained), 2 * PER_KIND
    fig = Figure(figsize=(1.75 * columns + 1.6, 2.05 * rows + 0.6))
    axes = fig.subplots(rows, columns, squeeze=False)
    for r, (ex, names, summary) in enumerate(explained):
        for c in range(columns):
            ax, which = axes[r, c], "correct" if c < PER_KIND else "failed"
            ax.set_xticks([])
            ax.set_yticks([])
            shown = summary["shown"][which]
            i = c % PER_KIND
            if i >= len(shown):
                ax.axis("off")
                continue
            k = shown[i]
            ax.imshow(overlay(ex.images[k], ex.maps[k]))
            caption = f"pred {_short(names[ex.predicted[k]])} {ex.probability[k]:.2f}"
            if which == "failed":
                caption = f"true {_short(names[ex.labels[k]])}\n{caption}"
            ax.set_title(caption, fontsize=6.5, color="green" if which == "correct" else "red")
        accuracy = summary["correct"] / summary["images"]
        axes[r, 0].set_ylabel(f"{summary['setting']}\nMAP@1 {accuracy:.2f}", fontsize=7.5)
    for c, which in ((0, "most confident correct"), (PER_KIND, "most confident failed")):
        axes[0, c].annotate(which, (0, 1.35), xycoords="axes fraction", fontsize=9, fontweight="bold")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)  # 64-px images: a higher resolution only adds bytes


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    work = partial(_explain, argv=argv, started=time.perf_counter())
    return run_members(EXPERIMENT, compare_architectures.EXPERIMENT, argv, work)


def _explain(args: argparse.Namespace, out: Path, members_from: Path, members: dict, *, argv: list[str],
             started: float) -> dict:
    def log(message: str) -> None:
        runner.say(message, not args.no_progress)

    explained = []
    for run in (r for r in members["runs"] if r["seed"] == 0):
        log(f"Grad-CAM: {run['setting']}")
        explained.append(explain_run(run, out / "runs" / runner.slug(run["setting"]), log))
    out.mkdir(parents=True, exist_ok=True)
    figure = draw(explained, out / "fig9_gradcam.png", EXPERIMENT.title)
    document = write_results(EXPERIMENT, argv, args, members, members_from, out, started, [0],
                             runs=[summary for _, _, summary in explained])
    table = write_table(document, out / "table.md")
    print(f"done in {document['wall_seconds']:.0f} s; wrote {out / 'results.json'}, {table}, {figure}", flush=True)
    return document


def write_table(document: dict, path: Path) -> Path:
    lines = [
        f"# {document['title']}", "", EXPERIMENT.about, "", document["preset"]["description"], "",
        f"Runs: seed 0 of `{document['members_from']}`, final models.", "",
        "| architecture | Grad-CAM layer | images | correct | failed |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for run in document["runs"]:
        lines.append(f"| {run['setting']} | `{run['layer']}` | {run['images']} ({run['split']}) | {run['correct']} | "
                     f"{run['failed']} |")  # fmt: skip
    lines += ["", f"Command: `{document['command']}`; total wall time {document['wall_seconds']:.0f} s.", ""]  # fmt: skip
    write_text_atomically(path, "\n".join(lines))
    return path


if __name__ == "__main__":
    main()
