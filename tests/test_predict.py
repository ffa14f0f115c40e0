"""`predict`: every item of a split, in the split's order, through a jitted forward, padded last batch dropped;
an empty split gives empty outputs of the forward's shapes."""

import jax
import jax.numpy as jnp
import numpy as np

from knifejax.data.cache import DecodedImages
from knifejax.data.split import Split
from knifejax.predict import predict


@jax.jit
def forward(images):
    """(mean brightness per image, the top-left pixel's channels): one scalar and one vector per item."""
    return images.astype(jnp.float32).mean(axis=(1, 2, 3)), images[:, 0, 0, :]


def _decoded(n: int) -> DecodedImages:
    images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return DecodedImages(np.arange(n) % 3, ["a", "b", "c"], 4, None, images)


def test_outputs_follow_the_splits_indices_across_a_padded_last_batch():
    data = _decoded(11)
    indices = np.array([7, 0, 3, 10, 4, 4, 9])  # unsorted, one repeated; 7 items in batches of 4
    means, corners = predict(forward, Split(data, indices), batch_size=4)
    assert means.shape == (7,) and corners.shape == (7, 3)
    np.testing.assert_allclose(means, data.images[indices].astype(np.float32).mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(corners, data.images[indices, 0, 0])


def test_an_empty_split_gives_empty_outputs_of_the_forwards_shapes():
    means, corners = predict(forward, Split(_decoded(5), np.array([], np.int64)), batch_size=4)
    assert means.shape == (0,) and corners.shape == (0, 3) and corners.dtype == np.uint8


def test_split_whole_is_every_item_in_order():
    split = Split.whole(_decoded(5))
    assert len(split) == 5
    np.testing.assert_array_equal(split.labels, [0, 1, 2, 0, 1])
