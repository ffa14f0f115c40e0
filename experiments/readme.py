"""Write the README's table of the main job from its results, so that the README shows what `make demo` printed:

    python -m experiments.sweep_lr        # the main job (make demo), writes runs/experiments/sweep_lr/results.json
    python -m experiments.readme          # replaces the table between the README's markers with those numbers

Only the block between `BEGIN` and `END` changes, and the README's figure is replaced by the run's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from knifejax.atomic_write import write_bytes_atomically, write_text_atomically
from knifejax.errors import CommandParser, ConfigError, reported_errors

from experiments.figures import chance_map5
from experiments.runner import default_out
from experiments.tables import by_setting

BEGIN = "<!-- main-job table: written by `python -m experiments.readme` from the sweep_lr results -->"
END = "<!-- end of the main-job table -->"


def table(document: dict) -> str:
    """The final validation and test MAP@5 of each setting, one column per learning rate."""
    groups = by_setting(document)
    rates = [label.removeprefix("lr=") for label in groups]
    chance = chance_map5(document)

    def row(name: str, value) -> str:
        cells = [f"{statistics.mean(value(r) for r in runs):.3f}" for runs in groups.values()]
        return f"| {name} | " + " | ".join(cells) + " |"

    seeds = len(document["seeds"])
    return "\n".join([
        "| lr | " + " | ".join(rates) + " |",
        "|---|" + "--:|" * len(rates),
        row(f"final validation MAP@5 (chance {chance:.2f})", lambda r: r["history"][-1]["val_map@5"]),
        row("test MAP@5 (final model)", lambda r: r["test"]["map@5"]),
        "",
        f"`{document['command'].strip()}`, {seeds} seed{'s' if seeds > 1 else ''}"
        + (" (mean over seeds)" if seeds > 1 else "") + f", {document['finished_at']}.",
    ])  # fmt: skip


def replace_block(text: str, block: str) -> str:
    """`text` with what lies between its BEGIN and END markers replaced by `block`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"the README needs exactly one {BEGIN!r} line followed by one {END!r} line")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n\n{block}\n\n{END}{tail}"


def main(argv: list[str] | None = None) -> Path:
    p = CommandParser(prog="python -m experiments.readme", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--results", type=Path, default=default_out("sweep_lr", "quick") / "results.json",
                   help="the main job's results (default: runs/experiments/sweep_lr/results.json)")
    p.add_argument("--readme", type=Path, default=Path("README.md"), help="the file to update (default: README.md)")
    p.add_argument("--figure", type=Path, default=Path("docs/images/sweep_lr_quick.png"),
                   help="where the README's figure of the run goes (default: docs/images/sweep_lr_quick.png)")
    args = p.parse_args(argv)
    with reported_errors():
        if not args.results.exists():
            raise ConfigError(f"{args.results} does not exist: run `python -m experiments.sweep_lr` (make demo) first")
        document = json.loads(args.results.read_text())
        if not document.get("complete") or document["preset"]["name"] != "quick":
            raise ConfigError(f"{args.results} is not a finished run of the quick preset: run "
                              "`python -m experiments.sweep_lr`")
        write_text_atomically(args.readme, replace_block(args.readme.read_text(), table(document)))
        write_bytes_atomically(args.figure, (args.results.parent / "fig1_learning_rate.png").read_bytes())
    print(f"wrote the main-job table of {args.results} into {args.readme} and its figure to {args.figure}")
    return args.readme


if __name__ == "__main__":
    main()
