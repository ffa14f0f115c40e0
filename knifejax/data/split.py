"""`Split`: some items of decoded images, the unit that training, evaluation and ensembles score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knifejax.data.cache import DecodedImages


@dataclass
class Split:
    """Items `indices` of the decoded images `data`."""

    data: DecodedImages
    indices: np.ndarray

    @classmethod
    def whole(cls, data: DecodedImages) -> Split:
        """Every item of `data`, in order."""
        return cls(data, np.arange(len(data)))

    @property
    def labels(self) -> np.ndarray:
        return self.data.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)
