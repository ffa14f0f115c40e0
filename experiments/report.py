"""Collect every experiment's results into one page, `docs/results.md`: per experiment its figure(s), its
table beside the study's numbers, and one sentence on whether the study's finding held here — worded from
the numbers, and calling a difference a finding only when it exceeds the spread (below). It trains nothing.

    python -m experiments.report                       # the quick preset's folders under runs/experiments
    python -m experiments.report --preset study --out docs/results_study.md

The spread: with several seeds, the standard error of each setting's mean test MAP@5 over seeds; with one
seed, the standard error over the test images (how much the score would move on other images of the same
kind; seed-to-seed variation is then not measured). Two settings differ when their gap exceeds twice the
standard error of the gap, sqrt(se_a² + se_b²).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.runner import default_out
from experiments.tables import by_setting

ORDER = ("sweep_lr", "sweep_scheduler", "sweep_batch", "compare_optimizers", "transfer_modes",
         "compare_architectures", "compare_vit", "ensemble", "gradcam")  # fmt: skip


@dataclass(frozen=True)
class Score:
    """A setting's test MAP@5: mean over seeds and its standard error (None: not measured)."""

    label: str
    mean: float
    se: float | None

    def __str__(self) -> str:
        return f"{self.label} ({self.mean:.3f}" + (f" ± {self.se:.3f})" if self.se is not None else ")")


def test_scores(document: dict, key: str = "map@5") -> list[Score]:
    """Each setting's test score, in the experiment's order (settings without test metrics are left out)."""
    scores = []
    for label, runs in by_setting(document).items():
        tests = [r["test"] for r in runs if r.get("test")]
        if not tests:
            continue
        values = [t[key] for t in tests]
        if len(values) > 1:
            se = statistics.stdev(values) / math.sqrt(len(values))
        else:
            se = tests[0].get(f"{key}_se")
        scores.append(Score(label, statistics.mean(values), se))
    return scores


def differs(a: Score, b: Score) -> bool | None:
    """Whether a and b differ beyond twice the standard error of their gap (None: no spread measured)."""
    if a.se is None or b.se is None:
        return None
    return abs(a.mean - b.mean) > 2 * math.hypot(a.se, b.se)


def versus(a: Score, b: Score) -> str:
    """'a above b', 'a below b' or 'a and b within the spread', with the numbers."""
    verdict = differs(a, b)
    if verdict is None:
        return f"{a} vs {b}: no spread was measured, so no finding"
    if not verdict:
        return f"{a} and {b} are within the spread"
    return f"{a} is {'above' if a.mean > b.mean else 'below'} {b}"


def _best(scores: list[Score]) -> str:
    ranked = sorted(scores, key=lambda s: -s.mean)
    if len(ranked) < 2:
        return f"only {ranked[0]}" if ranked else "no test scores"
    return f"best {ranked[0]}; against the runner-up, {versus(ranked[0], ranked[1])}"


def _verdict(expected_higher: Score, other: Score) -> str:
    """Whether the study's ordering `expected_higher` > `other` held here, beyond the spread."""
    if not differs(expected_higher, other):
        return "Not distinguishable"
    return "Held" if expected_higher.mean > other.mean else "Not reproduced"


def _by_label(scores: list[Score], *words: str) -> Score | None:
    return next((s for s in scores if all(w in s.label for w in words)), None)


SCALE = ("at the quick scale (16 synthetic classes, 5 epochs of 24 steps, 96 test images) such a difference "
         "is hard to show")


def _scale(doc: dict) -> str:
    """Why a finding may not carry over: the preset's scale in a few words (nothing for the study preset)."""
    return "" if doc["preset"]["name"] == "study" else f" — {SCALE}"


def sweep_lr(doc: dict) -> str:
    scores = test_scores(doc)
    study = _by_label(scores, "1e-4")
    best = max(scores, key=lambda s: s.mean)
    if study is best:
        return f"Held: the study's rate, 1e-4, scored best here too; {_best(scores)}."
    verdict = differs(best, study)
    held = "Not reproduced" if verdict else "Not distinguishable"
    why = (" (a short run rewards a larger rate: 120 steps at 1e-4 barely move the weights)"
           if doc["preset"]["name"] != "study" else "")
    return f"{held}: the study trained at 1e-4; here {versus(best, study)}{why}. {_best(scores).capitalize()}."


def sweep_scheduler(doc: dict) -> str:
    scores = test_scores(doc)
    rates = dict.fromkeys(s.label.split()[0] for s in scores)
    pairs = [(_by_label(scores, rate, "cosine"), _by_label(scores, rate, "constant")) for rate in rates]
    verdicts = [differs(c, k) for c, k in pairs]
    if None in verdicts:
        return "Not tested: some runs have no measured spread."
    above = sum(1 for (c, k), v in zip(pairs, verdicts) if v and c.mean > k.mean)
    below = sum(1 for (c, k), v in zip(pairs, verdicts) if v and c.mean < k.mean)
    held = "Held" if above and not below else "Not reproduced" if below > above else "Not distinguishable"
    return (f"{held}: the study adopted per-step cosine annealing; here cosine scored above the constant rate beyond "
            f"the spread at {above} of {len(pairs)} rates, below it at {below}{_scale(doc)}.")  # fmt: skip


def sweep_batch(doc: dict) -> str:
    scores = test_scores(doc)
    sixteen = _by_label(scores, "batch 16")
    others = [s for s in scores if s is not sixteen]
    verdicts = [differs(sixteen, o) for o in others]
    if all(v and sixteen.mean > o.mean for v, o in zip(verdicts, others)):
        return f"Held: batch 16 scored best here too, beyond the spread; {_best(scores)}."
    held = "Not reproduced" if any(v and o.mean > sixteen.mean for v, o in zip(verdicts, others)) else "Not distinguishable"
    return (f"{held}: the study found batch 16 best (0.741 vs 0.661 and 0.667); here "
            f"{'; '.join(versus(sixteen, o) for o in others)}{_scale(doc)}.")  # fmt: skip


def compare_optimizers(doc: dict) -> str:
    scores = test_scores(doc)
    adam, momentum, sgd = (_by_label(scores, "Adam"), _by_label(scores, "momentum"), _by_label(scores, "SGD"))
    steps = [(adam, momentum), (momentum, sgd)]
    ordered = [differs(a, b) and a.mean > b.mean for a, b in steps]
    held = "Held" if all(ordered) else "Partly held" if any(ordered) else "Not reproduced"
    return (f"{held}: the study ranked Adam (0.694) far above SGD with momentum (0.160) and SGD (0.025); here "
            f"{versus(adam, momentum)}; {versus(momentum, sgd)}.")  # fmt: skip


def transfer_modes(doc: dict) -> str:
    scores = test_scores(doc)
    scratch, transfer, tune = _by_label(scores, "scratch"), _by_label(scores, "transfer"), _by_label(scores, "fine")
    held = _verdict(transfer, scratch)
    return (f"{held}: the study's premise, that ImageNet weights beat a random start; here "
            f"{versus(transfer, scratch)}. Freezing the early stages: {versus(tune, transfer)}.")  # fmt: skip


def compare_architectures(doc: dict) -> str:
    scores = test_scores(doc)
    study = ("the study ranked EfficientNet-B0 (0.661) > ResNet-18 (0.586) > MobileNetV3 (0.513) > SKResNet-18 "
             "(0.403), all from ImageNet weights")  # fmt: skip
    scratch = [s for s in scores if "scratch" in s.label]
    if not scratch:
        return f"{study.capitalize()}. Here {_best(scores)}."
    return (f"Not testable offline: {study}, and here only EfficientNet-Lite0 has weights. Here {_best(scores)}; "
            f"trained from scratch, {_best(scratch)}, the scratch runs are near chance after 5 epochs.")  # fmt: skip


def compare_vit(doc: dict) -> str:
    scores = test_scores(doc)
    if doc["preset"]["name"] != "study":
        return (f"Not testable offline: the study's ViTs (all below MAP@5 0.60) were pretrained, and no ViT weights "
                f"are available offline; from scratch, {_best(scores)}, all near chance.")  # fmt: skip
    below = all(s.mean < 0.60 for s in scores)
    return f"{'Held' if below else 'Not reproduced'}: the study's three ViTs all stayed below MAP@5 0.60; here {_best(scores)}."


def ensemble(doc: dict) -> str:
    rows = {r["name"]: r for r in doc["rows"]}
    score = {name: Score(name, r["map@1"], r["map@1_se"]) for name, r in rows.items()}
    members = [score[n] for n, r in rows.items() if r["kind"] == "member"]
    best_member = max(members, key=lambda s: s.mean)
    average = score["score averaging"]
    stacked = score["stacked NN, fit on train (the study's)"]
    held = _verdict(stacked, average)
    text = (f"{held}: the study's stacked network (MAP@1 0.734) edged out score averaging (0.719), a gap of 0.015 "
            f"that its 351 test images cannot resolve either; here, by MAP@1, {versus(stacked, average)}; against "
            f"the best member, {versus(average, best_member)}")  # fmt: skip
    held_out = score.get("stacked NN, fit on validation")
    if held_out:
        text += f"; fit on held-out images, {versus(held_out, stacked)}"
    return text + "."


def gradcam(doc: dict) -> str:
    parts = [f"{r['setting']} {r['correct']}/{r['images']} correct" for r in doc["runs"]]
    return ("Descriptive: the study used Grad-CAM to see whether its models look at the knife; the figure shows "
            f"where each architecture looked on its most confident hits and misses ({'; '.join(parts)}).")


FINDINGS: dict[str, Callable[[dict], str]] = {
    "sweep_lr": sweep_lr, "sweep_scheduler": sweep_scheduler, "sweep_batch": sweep_batch,
    "compare_optimizers": compare_optimizers, "transfer_modes": transfer_modes,
    "compare_architectures": compare_architectures, "compare_vit": compare_vit, "ensemble": ensemble,
    "gradcam": gradcam,
}  # fmt: skip


def _table_body(table_md: str) -> str:
    """table.md without its title, its headings demoted below the report's."""
    lines = table_md.splitlines()[1:]
    return "\n".join("###" + line[1:] if line.startswith("# ") else line for line in lines).strip()


def section(name: str, folder: Path, images: Path, docs: Path) -> str:
    document = json.loads((folder / "results.json").read_text())
    figures = sorted(folder.glob("fig*.png"))
    lines = [f"## {document['title']}", "", f"`python -m experiments.{name}`", ""]
    for figure in figures:
        target = images / f"{name}_{figure.name}"
        shutil.copyfile(figure, target)
        lines += [f"![{figure.stem}]({target.relative_to(docs).as_posix()})", ""]
    lines += [f"**Finding.** {FINDINGS[name](document)}", "", _table_body((folder / "table.md").read_text()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--preset", default="quick", help="whose folders to collect (default: quick)")
    p.add_argument("--runs", type=Path, default=Path("runs") / "experiments", metavar="DIR",
                   help="where the experiment folders are (default: runs/experiments)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("docs") / "results.md", help="the page (default: docs/results.md)")
    args = p.parse_args(argv)
    docs = args.out.parent
    images = docs / "images" / "results" / args.preset
    images.mkdir(parents=True, exist_ok=True)
    sections, missing = [], []
    for name in ORDER:
        folder = args.runs / default_out(name, args.preset).name
        if (folder / "results.json").exists() and (folder / "table.md").exists():
            sections.append(section(name, folder, images, docs))
        else:
            flags = "" if args.preset == "quick" else f" --preset {args.preset}"
            missing.append(f"`python -m experiments.{name}{flags}`")
    head = [
        f"# Results: the study's experiments, {args.preset} preset", "",
        "Written by `python -m experiments.report` from each experiment's results.json, table.md and figures "
        f"(under `{args.runs.as_posix()}`); the study's numbers are its own, on its real photos.", "",
        "How to read the findings: a difference counts only when it exceeds twice the standard error of the gap — "
        "over seeds when there are several, otherwise over the test images (then seed-to-seed variation is not "
        "measured, and small-scale runs of a few minutes can still mislead).", "",
    ]  # fmt: skip
    if missing:
        head += ["Not run yet (no results found): " + ", ".join(missing) + ".", ""]
    args.out.write_text("\n".join(head + sections))
    print(f"wrote {args.out} ({len(sections)} experiments, {len(missing)} missing) and its figures in {images}")
    return args.out


if __name__ == "__main__":
    main()
