"""Worker processes for grain pipelines outside an absl application."""

from absl import flags


def allow_grain_workers() -> None:
    """grain's worker processes read absl flags, which raise `UnparsedFlagAccessError` unless parsed;
    a library has no `app.run`, so mark them parsed (with their defaults) once."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
