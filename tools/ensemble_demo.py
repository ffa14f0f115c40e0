"""Train three small members on the synthetic knives, combine them every way, and draw the comparison.

    python -m tools.ensemble_demo                        # ~5 minutes on a 2-core CPU
    python -m tools.ensemble_demo --out runs/ensemble_demo --figure docs/images/ensemble_synthetic.png

Members (one seed, so they share one validation split): EfficientNet-Lite0 from its ImageNet weights at
64 px and at 96 px with ImageNet normalisation, and ResNet-18 from scratch at 64 px. Ensembles: the mean of
probabilities, the geometric mean, and the stacked head fit on the held-out validation images (the default)
and on the training images (the study's way). Everything is evaluated once on the synthetic test split.
Finished runs and cached features are reused, so a second call only redraws. Writes results.json and
results.md into --out and the figure to --figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import knifejax as kj
from knifejax.atomic_write import write_text_atomically
from knifejax.ensemble import DataSpec, build_ensemble, load_member
from knifejax.metrics import chance_map_at_k, reciprocal_ranks
from knifejax.plots import plot_ensemble_comparison

CLASSES = 8
COMMON = dict(synthetic_classes=CLASSES, synthetic_per_class=24, val_fraction=0.25, batch_size=16, lr=1e-3, seed=0)
MEMBERS = {
    "lite0-64": dict(model="tf_efficientnet_lite0", pretrained="default", image_size=64),
    "lite0-80": dict(model="tf_efficientnet_lite0", pretrained="default", image_size=80, norm="imagenet"),
    "r18-48": dict(model="resnet18", image_size=48),
}
TEST = DataSpec("synthetic", synthetic_per_class=120)  # the test split: a quarter, 30 images per class


def row(name: str, kind: str, probs: np.ndarray, labels: np.ndarray) -> dict:
    out = {"name": name, "kind": kind}
    for k in (1, 5):
        rr = np.asarray(reciprocal_ranks(probs, labels, k))
        out[f"map@{k}"] = float(rr.mean())
        out[f"map@{k}_se"] = float(rr.std(ddof=1) / np.sqrt(len(rr)))
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    kj.apply_xla_cpu_flags()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ensemble_demo", help="runs, ensembles, results (default: %(default)s)")
    parser.add_argument("--figure", default="docs/images/ensemble_synthetic.png", help="the PNG (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per member (default: %(default)s)")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()

    runs = []
    for name, settings in MEMBERS.items():
        run = out / "runs" / name
        kj.fit(kj.TrainConfig(**COMMON, **settings, epochs=args.epochs), run, progress=False)
        runs.append(run)
    trained = time.perf_counter()

    members = [load_member(run) for run in runs]  # loaded once: the ensembles share their features
    ensembles = {
        "average": build_ensemble(members, "average", out=out / "average"),
        "geometric": build_ensemble(members, "geometric", out=out / "geometric"),
        "stacked (fit on val)": build_ensemble(members, "stacked", fit_on="val", out=out / "stacked_val"),
        "stacked (fit on train)": build_ensemble(members, "stacked", fit_on="train", out=out / "stacked_train"),
    }
    first = ensembles["average"]
    outputs, labels, description = first.member_outputs(TEST)
    probs = {name: softmax(z) for name, (_, z) in zip(MEMBERS, outputs)}
    probs.update({name: e.predict_proba(TEST) for name, e in ensembles.items()})
    rows = [row(name, "member" if name in MEMBERS else "ensemble", p, labels) for name, p in probs.items()]
    # paired: each ensemble against the mean of probabilities, image by image (the members' errors are shared)
    base = np.asarray(reciprocal_ranks(probs["average"], labels, 5))
    paired = {}
    for name in list(ensembles)[1:]:
        diff = np.asarray(reciprocal_ranks(probs[name], labels, 5)) - base
        paired[name] = {"map@5_minus_average": float(diff.mean()), "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}
    chance = {"map@1": chance_map_at_k(CLASSES, 1), "map@5": chance_map_at_k(CLASSES, 5)}

    title = f"{len(MEMBERS)} members and their ensembles, synthetic knives ({CLASSES} classes), {description}"
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    plot_ensemble_comparison(rows, args.figure, title=f"{len(MEMBERS)} members vs ensembles — {CLASSES} synthetic "
                             f"classes, {len(labels)} test images (±1 s.e.)", chance=chance)  # fmt: skip
    table = ["| model | MAP@1 | MAP@5 |", "|---|---|---|"]
    table += [f"| {r['name']} | {r['map@1']:.3f} ± {r['map@1_se']:.3f} | {r['map@5']:.3f} ± {r['map@5_se']:.3f} |"
              for r in rows]  # fmt: skip
    table += ["", "| ensemble | MAP@5 minus average's (paired, per image) |", "|---|---|"]
    table += [f"| {name} | {p['map@5_minus_average']:+.3f} ± {p['se']:.3f} |" for name, p in paired.items()]
    fits = {name: e.fit_info for name, e in ensembles.items() if e.fit_info}
    results = {"title": title, "rows": rows, "paired_vs_average": paired, "stacked_fits": fits, "chance": chance}
    write_text_atomically(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_text_atomically(out / "results.md", title + "\n\n" + "\n".join(table) + "\n")
    print("\n" + title + "\n" + "\n".join(table))
    print(f"\ntraining {trained - started:.0f} s, ensembles and evaluation {time.perf_counter() - trained:.0f} s; "
          f"figure: {args.figure}")  # fmt: skip


if __name__ == "__main__":
    main()
