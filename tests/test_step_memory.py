"""benchmarks.step_memory: the compiled train step's own account of its memory, which `fit` checks before the
first step, grows with the batch and holds at least the parameters and Adam's two moments."""

import pytest

from benchmarks.step_memory import STUDY_MODELS, step_memory
from knifejax import study
from tests.tiny_model import TINY, registered


@pytest.mark.slow  # compiles ResNet-18's train step
def test_the_account_holds_the_state():
    parameters = 11_181_642  # resnet18 with 10 classes
    assert 3 * 4 * parameters < step_memory("resnet18", 32, 2, "fp32", num_classes=10)  # parameters, Adam's moments


def test_the_account_grows_with_the_batch():
    with registered():  # the step's temporaries (activations) grow with the batch, whatever the network
        small, large = (step_memory(TINY, 32, batch, "fp32", num_classes=10) for batch in (2, 16))
    assert small < large


def test_the_default_models_are_the_studys_eight_at_its_sizes():
    assert [m for m, _ in STUDY_MODELS][:5] == [a.model for a in study.ARCHITECTURES]
    assert dict(STUDY_MODELS)["vit_small_patch16_384.augreg_in21k_ft_in1k"] == 384 and len(STUDY_MODELS) == 8
