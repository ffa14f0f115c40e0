"""Models called through one jit in tests, compiled at XLA's lowest optimisation level.

Called eagerly, a convolutional network dispatches, and compiles, every primitive on its own:
`mobilenetv3_small_100` at 48×40 took 21 s eagerly and 3 s jitted, `tf_efficientnet_lite0` at 224 px 15.6 s and
1.7 s (first call, 2-core CPU). A test calls each program once or twice, so compiling is nearly all its cost:
`xla_backend_optimization_level=0` (this jit's own option; training and every other program keep XLA's
default) compiles faster and computes the same function, within the parity tolerances either way: the 19 forward
parity cases took 98 CPU-s at XLA's default and 76 at level 0. (Not for the float64 gradient parity, where the
unoptimised program's run time outweighed the compile time saved: 128 against 154 CPU-s.)
"""

import jax
from flax import nnx

QUICK_COMPILE = {"xla_backend_optimization_level": 0}


def compiled_quickly(fn):
    """`fn(model, *args)` as one jit compiled with `QUICK_COMPILE`, the model's state updated afterwards as
    `nnx.jit` does (BatchNorm statistics in train mode). The program is built for the model's structure at each
    call (a graph definition is no static argument), so a second call compiles again, or finds the program in the
    suite's persistent compile cache."""

    def call(model, *args):
        graphdef, state = nnx.split(model)

        def pure(state, *args):
            model = nnx.merge(graphdef, state)
            return fn(model, *args), nnx.state(model)

        out, state = jax.jit(pure, compiler_options=QUICK_COMPILE)(state, *args)
        nnx.update(model, state)
        return out

    return call


@compiled_quickly
def forward(model, x):
    return model(x)


@compiled_quickly
def eval_outputs(model, x):
    """(feature map, pre-logits, logits) from one pass of the features."""
    fmap = model.forward_features(x)
    return fmap, model.forward_head(fmap, pre_logits=True), model.forward_head(fmap)
