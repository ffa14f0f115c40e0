"""Checkpoint readers: any state dict a user has, as ``dict[str, numpy.ndarray]``, without torch."""

from knifejax.io.errors import CheckpointError
from knifejax.io.readers import open_state_dict, read_state_dict

__all__ = ["CheckpointError", "open_state_dict", "read_state_dict"]
