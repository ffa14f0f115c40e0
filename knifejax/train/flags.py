"""Command-line flags generated from TrainConfig's fields: one flag per field, typed, grouped and documented by
the field itself, so `python -m knifejax train` and every experiment script take the same flags."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from knifejax.train.config import TrainConfig


def flag(name: str) -> str:
    """'batch_size' -> '--batch-size'."""
    return "--" + name.replace("_", "-")


def _base_type(hint):
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (), defaults: str = "") -> None:
    """One flag per TrainConfig field except `exclude`; unset flags stay None. `defaults` names where the
    defaults the help prints come from when not TrainConfig's own (e.g. "the preset's")."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in exclude:
            continue
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        hint = hints[f.name]
        choices = f.metadata.get("choices")
        help_text = f"{f.metadata['help']}" + (f", one of {', '.join(choices)}" if choices else "")
        help_text += f" (default: {defaults or f.default})".replace("%", "%%")
        if hint is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "rotation":
            group.add_argument(flag(f.name), type=float, nargs=2, metavar=("MIN", "MAX"), help=help_text)
        else:
            group.add_argument(flag(f.name), type=_base_type(hint), choices=choices, metavar=f.name.upper(),
                               help=help_text)  # fmt: skip


def given_fields(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line parsed by a parser with `add_config_flags`."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}  # fmt: skip
    if "rotation" in given:
        given["rotation"] = tuple(given["rotation"])
    return given
