"""Collect every experiment's results into one page, `docs/results.md`: per experiment its figure(s), its
table beside the study's numbers, and one sentence on whether the study's finding held here — worded from
the numbers, and calling a difference a finding only when it exceeds the spread (below). It trains nothing.

    python -m experiments.report                       # the quick preset's folders under runs/experiments
    python -m experiments.report --preset study --out docs/results_study.md

The score: each setting's test MAP@5; where no run has test metrics (the study preset, which validates on
test.csv every epoch as the study did), its final epoch's validation MAP@5, and the finding says so. The spread:
with several seeds, the standard error of each setting's mean score over seeds; with one seed, the standard error
over the images scored (how much the score would move on other images of the same kind; seed-to-seed variation
is then not measured). Two settings differ when their gap exceeds twice the standard error of the gap,
sqrt(se_a² + se_b²).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments import study_results
from experiments.presets import format_lr
from experiments.runner import default_out
from experiments.tables import by_setting, write_table
from knifejax import study
from knifejax.atomic_write import write_bytes_atomically, write_text_atomically
from knifejax.models.registry import split_model_name

ORDER = ("sweep_lr", "sweep_scheduler", "sweep_batch", "compare_optimizers", "transfer_modes",
         "compare_architectures", "compare_vit", "ensemble", "gradcam")  # fmt: skip


@dataclass(frozen=True)
class Score:
    """A setting's MAP@5 (test, else final validation): mean over seeds and its standard error (None: not
    measured)."""

    label: str
    mean: float
    se: float | None

    def __str__(self) -> str:
        return f"{self.label} ({self.mean:.3f}" + (f" ± {self.se:.3f})" if self.se is not None else ")")


def scored_by_test(document: dict) -> bool:
    """Whether the settings are compared by their test scores; else by the final epoch's validation scores, which
    the study preset gives instead (it validates on test.csv every epoch, as the study did, and has no test set)."""
    return any(r.get("test") for r in document["runs"])


def setting_scores(document: dict, key: str = "map@5") -> list[Score]:
    """Each setting's score, in the experiment's order: its test score, or where no run was tested its final
    validation score (`scored_by_test`); settings without one are left out."""
    by_test = scored_by_test(document)
    scores = []
    for label, runs in by_setting(document).items():
        if by_test:
            measured = [r["test"] for r in runs if r.get("test")]
        else:
            final = [r["history"][-1] for r in runs if r.get("history")]
            measured = [{key: h[f"val_{key}"], f"{key}_se": h.get(f"val_{key}_se")} for h in final]
        if not measured:
            continue
        values = [m[key] for m in measured]
        if len(values) > 1:
            se = statistics.stdev(values) / math.sqrt(len(values))
        else:
            se = measured[0].get(f"{key}_se")
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
        return f"only {ranked[0]}" if ranked else "no scores"
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
    scores = setting_scores(doc)
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
    scores = setting_scores(doc)
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
    scores = setting_scores(doc)
    sixteen = _by_label(scores, "batch 16")
    others = [s for s in scores if s is not sixteen]
    verdicts = [differs(sixteen, o) for o in others]
    if all(v and sixteen.mean > o.mean for v, o in zip(verdicts, others)):
        return f"Held: batch 16 scored best here too, beyond the spread; {_best(scores)}."
    held = "Not reproduced" if any(v and o.mean > sixteen.mean for v, o in zip(verdicts, others)) else "Not distinguishable"
    t1 = study_results.TABLE1
    return (f"{held}: the study found batch 16 best ({t1[16].map5:.3f} vs {t1[32].map5:.3f} and "
            f"{t1[64].map5:.3f}); here "
            f"{'; '.join(versus(sixteen, o) for o in others)}{_scale(doc)}.")  # fmt: skip


def compare_optimizers(doc: dict) -> str:
    scores = setting_scores(doc)
    adam, momentum, sgd = (_by_label(scores, "Adam"), _by_label(scores, "momentum"), _by_label(scores, "SGD"))
    steps = [(adam, momentum), (momentum, sgd)]
    ordered = [differs(a, b) and a.mean > b.mean for a, b in steps]
    held = "Held" if all(ordered) else "Partly held" if any(ordered) else "Not reproduced"
    t2 = {key: r.map5 for key, r in study_results.TABLE2.items()}
    return (f"{held}: the study ranked Adam ({t2['adam', 0.0]:.3f}) far above SGD with momentum ({t2['sgd', 0.9]:.3f}) "
            f"and SGD ({t2['sgd', 0.0]:.3f}); here "
            f"{versus(adam, momentum)}; {versus(momentum, sgd)}.")  # fmt: skip


def transfer_modes(doc: dict) -> str:
    scores = setting_scores(doc)
    scratch, transfer, tune = _by_label(scores, "scratch"), _by_label(scores, "transfer"), _by_label(scores, "fine")
    held = _verdict(transfer, scratch)
    return (f"{held}: the study's premise, that ImageNet weights beat a random start; here "
            f"{versus(transfer, scratch)}. Freezing the early stages: {versus(tune, transfer)}.")  # fmt: skip


def compare_architectures(doc: dict) -> str:
    scores = setting_scores(doc)
    ranked = " > ".join(f"{a.label} ({study_results.TABLE3[split_model_name(a.model)[0]].map5:.3f})"
                        for a in study.ARCHITECTURES if not a.epochs)  # fmt: skip
    study_text = f"the study ranked {ranked}, all from ImageNet weights"
    scratch = [s for s in scores if "scratch" in s.label]
    if not scratch:
        return f"{study_text[0].upper()}{study_text[1:]}. Here {_best(scores)}."
    return (f"Not testable offline: {study_text}, and here only EfficientNet-Lite0 has weights. Here {_best(scores)}; "
            f"trained from scratch, {_best(scratch)}, the scratch runs are near chance after 5 epochs.")  # fmt: skip


def compare_vit(doc: dict) -> str:
    scores = setting_scores(doc)
    limit = study_results.VIT_BELOW
    if doc["preset"]["name"] != "study":
        return (f"Not testable offline: the study's ViTs (all below MAP@5 {limit:.2f}) were pretrained, and no ViT "
                f"weights are available offline; from scratch, {_best(scores)}, all near chance.")  # fmt: skip
    below = all(s.mean < limit for s in scores)
    return (f"{'Held' if below else 'Not reproduced'}: the study's three ViTs all stayed below MAP@5 {limit:.2f}; "
            f"here {_best(scores)}.")  # fmt: skip


def ensemble(doc: dict) -> str:
    rows = {r["name"]: r for r in doc["rows"]}
    score = {name: Score(name, r["map@1"], r["map@1_se"]) for name, r in rows.items()}
    members = [score[n] for n, r in rows.items() if r["kind"] == "member"]
    best_member = max(members, key=lambda s: s.mean)
    average = score["score averaging"]
    stacked = score["stacked NN, fit on train (the study's)"]
    held = _verdict(stacked, average)
    s_map1, a_map1 = study_results.TABLE4_STACKED.map1, study_results.TABLE4_AVERAGING.map1
    text = (f"{held}: the study's stacked network (MAP@1 {s_map1:.3f}) edged out score averaging ({a_map1:.3f}), a "
            f"gap of {s_map1 - a_map1:.3f} that its {study_results.TEST_IMAGES} test images cannot resolve either; "
            f"here, by MAP@1, {versus(stacked, average)}; against the best member, "
            f"{versus(average, best_member)}")  # fmt: skip
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


# The experiments whose findings compare the settings' test scores (the others score their own way).
SCORED_BY_TEST = ("sweep_lr", "sweep_scheduler", "sweep_batch", "compare_optimizers", "transfer_modes",
                  "compare_architectures", "compare_vit")  # fmt: skip
BY_VALIDATION = ("Scored by each setting's final validation MAP@5 (the runs have no test metrics: the study preset "
                 "validates on test.csv every epoch, as the study did, so these are the study's own kind of number, "
                 "and the best setting's is optimistic for having been chosen on those images; `--test-data` scores "
                 "each final model once on images it was not chosen by). ")


def finding(name: str, doc: dict) -> str:
    """The experiment's finding, saying what scored it."""
    if name in SCORED_BY_TEST and not scored_by_test(doc):
        return BY_VALIDATION + FINDINGS[name](doc)
    return FINDINGS[name](doc)


# The study's readings after a given epoch, each beside the setting of the experiment that reproduces it.
EPOCH_READINGS = {
    "sweep_lr": (f"lr={format_lr(study_results.READINGS_LR)}", study_results.FIG1),
    "sweep_scheduler": (f"lr={format_lr(study_results.READINGS_LR)} cosine", study_results.FIG2B),
}


def epoch_reading(doc: dict, label: str, reading: study_results.Reading) -> str:
    """The study's reading after epoch `reading.epochs` beside this experiment's `label` runs at that epoch."""
    runs, epoch = by_setting(doc).get(label, []), reading.epochs
    head = (f"**The study's epoch-{epoch} reading ({reading.where}).** {label} after epoch {epoch}: the study "
            f"MAP@5 {reading.map5:.3f} and training loss {reading.loss:g}; ")  # fmt: skip
    at_epoch = [r["history"][epoch - 1] for r in runs if len(r["history"]) >= epoch]
    if not at_epoch:
        epochs = min((len(r["history"]) for r in runs), default=0)
        return head + f"here n/a: the run has {epochs} epoch{'' if epochs == 1 else 's'}."
    seeds = f" (mean of {len(at_epoch)} seeds)" if len(at_epoch) > 1 else ""
    return (head + f"here validation MAP@5 {statistics.mean(h['val_map@5'] for h in at_epoch):.3f} and training "
            f"loss {statistics.mean(h['train_loss'] for h in at_epoch):.4f}{seeds}.")  # fmt: skip


def rewrite_table(name: str, document: dict, path: Path) -> str:
    """The experiment's table.md written again from its results.json, so it quotes the study as the code does now."""
    module = importlib.import_module(f"experiments.{name}")
    if name in ("ensemble", "gradcam"):
        module.write_table(document, path)
    else:
        write_table(module.EXPERIMENT, document, path)
    return path.read_text()


def _table_body(table_md: str) -> str:
    """table.md without its title, its headings demoted below the report's."""
    lines = table_md.splitlines()[1:]
    return "\n".join("###" + line[1:] if line.startswith("# ") else line for line in lines).strip()


def bounded(doc: dict) -> str | None:
    """What to say of an experiment whose runs `--max-steps` cut short (None: they ran their epochs)."""
    steps = doc["preset"].get("max_steps")
    if steps is None:
        return None
    return (f"**Bounded runs.** Every run stopped after at most {steps} optimizer steps (`--max-steps {steps}`): a "
            "rehearsal of the code at this preset's size; its scores are no evidence for or against the study.")


def section(name: str, folder: Path, images: Path, docs: Path) -> tuple[str, bool]:
    """The experiment's part of the page, and whether its runs were bounded."""
    document = json.loads((folder / "results.json").read_text())
    figures = sorted(folder.glob("fig*.png"))
    lines = [f"## {document['title']}", "", f"`python -m experiments.{name}`", ""]
    if note := bounded(document):
        lines += [note, ""]
    for figure in figures:
        target = images / f"{name}_{figure.name}"
        write_bytes_atomically(target, figure.read_bytes())
        lines += [f"![{figure.stem}]({target.relative_to(docs).as_posix()})", ""]
    lines += [f"**Finding.** {finding(name, document)}", ""]
    if name in EPOCH_READINGS:
        lines += [epoch_reading(document, *EPOCH_READINGS[name]), ""]
    lines += [_table_body(rewrite_table(name, document, folder / "table.md")), ""]
    return "\n".join(lines), note is not None


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
    sections, missing, cut = [], [], []
    for name in ORDER:
        folder = args.runs / default_out(name, args.preset).name
        if (folder / "results.json").exists() and (folder / "table.md").exists():
            text, was_bounded = section(name, folder, images, docs)
            sections.append(text)
            if was_bounded:
                cut.append(name)
        else:
            flags = "" if args.preset == "quick" else f" --preset {args.preset}"
            missing.append(f"`python -m experiments.{name}{flags}`")
    head = [
        f"# Results: the study's experiments, {args.preset} preset", "",
        "Written by `python -m experiments.report` from each experiment's results.json, table.md and figures "
        f"(under `{args.runs.as_posix()}`); the study's numbers are its own, on its real photos.", "",
        "How to read the findings: a difference counts only when it exceeds twice the standard error of the gap — "
        "over seeds when there are several, otherwise over the images scored (then seed-to-seed variation is not "
        "measured, and small-scale runs of a few minutes can still mislead).", "",
        *(f"Note: {d[0].upper()}{d[1:]}" for d in study_results.disagreements()), "",
    ]  # fmt: skip
    if cut:
        head += [f"**Rehearsal, not results:** the runs of {', '.join(cut)} were cut short by `--max-steps` (each "
                 "section says to how many steps); their numbers show that the code runs at this size, nothing about "
                 "the study's findings.", ""]
    if missing:
        head += ["Not run yet, or not finished (no table found): " + ", ".join(missing) + ".", ""]
    write_text_atomically(args.out, "\n".join(head + sections))
    print(f"wrote {args.out} ({len(sections)} experiments, {len(missing)} missing) and its figures in {images}")
    return args.out


if __name__ == "__main__":
    main()
