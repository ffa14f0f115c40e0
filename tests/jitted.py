"""Models called through one `nnx.jit` in tests. Called eagerly, a convolutional network dispatches, and compiles,
every primitive on its own: `mobilenetv3_small_100` at 48×40 took 21 s eagerly and 3 s jitted,
`tf_efficientnet_lite0` at 224 px 15.6 s and 1.7 s (first call, 2-core CPU)."""

from flax import nnx


@nnx.jit
def forward(model, x):
    return model(x)


@nnx.jit
def eval_outputs(model, x):
    """(feature map, pre-logits, logits) from one pass of the features."""
    fmap = model.forward_features(x)
    return fmap, model.forward_head(fmap, pre_logits=True), model.forward_head(fmap)
