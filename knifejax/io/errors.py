"""The one exception the checkpoint readers raise for problems a user can fix."""

from knifejax.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, of an unsupported kind, corrupt, or not a state dict.

    The message names the file (or mapping) and what failed, so the user can act on it.
    """
