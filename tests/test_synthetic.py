"""The procedural synthetic-knives dataset: determinism, class enumeration, hard pairs, splits."""

import numpy as np
import pytest

from knifejax.data.synthetic import (
    FINISHES,
    FITTINGS,
    HANDLES,
    NUM_CLASSES,
    PROFILES,
    SyntheticKnives,
    class_attributes,
    class_names,
    hard_pairs,
    knife_class,
    render_knife,
)


def test_enumeration_is_192_distinct_classes():
    assert NUM_CLASSES == 192 == len(PROFILES) * len(HANDLES) * len(FINISHES)
    names = class_names()
    assert len(names) == len(set(names)) == 192
    attrs = class_attributes()
    assert attrs.shape == (192, 4)
    assert len({tuple(a) for a in attrs.tolist()}) == 192
    # every value of every attribute is used, and fittings are spread over profiles and handles
    for column, values in enumerate((PROFILES, HANDLES, FINISHES, FITTINGS)):
        assert set(attrs[:, column].tolist()) == set(range(len(values)))
    for column in (0, 1):
        for value in range(attrs[:, column].max() + 1):
            assert set(attrs[attrs[:, column] == value, 3].tolist()) == set(range(len(FITTINGS)))
    kc = knife_class(4 + 8 * 4 + 48 * 1)
    assert kc.name == names[kc.class_id] == "clip-point / olive polymer / black-coated / plain"
    assert class_names(10) == names[:10]


def test_hard_pairs_differ_in_exactly_one_attribute():
    attrs = class_attributes()
    pairs = hard_pairs()
    assert len(pairs) == len(set(pairs)) >= 400
    for a, b in pairs:
        assert a < b
        assert (attrs[a] != attrs[b]).sum() == 1
    differing = {int(np.nonzero(attrs[a] != attrs[b])[0][0]) for a, b in pairs}
    assert differing == {0, 1, 2}  # profile-only, handle-only and finish-only pairs
    # small subsets keep hard pairs, and subsets' pairs are the full set's restricted to them
    assert len(hard_pairs(8)) == 4
    assert hard_pairs(20) == [(a, b) for a, b in pairs if b < 20]


@pytest.mark.parametrize("bad", [0, 193, -1, 2.5])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticKnives(num_classes=bad)
    with pytest.raises(ValueError, match="num_classes"):
        class_names(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        SyntheticKnives(size=15)
    with pytest.raises(ValueError, match="size"):
        render_knife(0, 0, size=8)
    with pytest.raises(ValueError, match="split"):
        SyntheticKnives(split="validation")
    with pytest.raises(ValueError, match="class_id"):
        render_knife(192, 0)


def test_render_is_deterministic():
    a = render_knife(17, 3, size=32, seed=1)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_knife(17, 3, size=32, seed=1))
    assert not np.array_equal(a, render_knife(17, 4, size=32, seed=1))
    assert not np.array_equal(a, render_knife(17, 3, size=32, seed=2))
    assert render_knife(5, 0, size=48).shape == (48, 48, 3)


def test_dataset_items_labels_and_splits():
    train = SyntheticKnives(num_classes=6, images_per_class=4, size=16, split="train")
    test = SyntheticKnives(num_classes=6, images_per_class=4, size=16, split="test")
    assert len(train) == 24 and train.class_names == class_names(6)
    labels = train.labels
    assert labels.shape == (24,) and np.bincount(labels).tolist() == [4] * 6
    for i in (0, 7, 23, -1):
        item = train[i]
        assert item["label"] == labels[i] and isinstance(item["label"], int)
        assert item["image"].shape == (16, 16, 3) and item["image"].dtype == np.uint8
    assert np.array_equal(train[7]["image"], train[7]["image"])
    with pytest.raises(IndexError):
        train[24]
    # disjoint sample indices, whatever the sizes of the splits
    big_train = SyntheticKnives(num_classes=6, images_per_class=50, split="train")
    big_test = SyntheticKnives(num_classes=6, images_per_class=50, split="test")
    val = SyntheticKnives(num_classes=6, images_per_class=50, split="val")
    index_sets = [{ds.sample_index(i) for i in range(len(ds))} for ds in (big_train, big_test, val)]
    assert sum(len(s) for s in index_sets) == len(set().union(*index_sets)) == 150
    assert not np.array_equal(train[0]["image"], test[0]["image"])


def test_classes_are_distinguishable_but_vary():
    # a handle-only hard pair: drop-point / wood vs drop-point / olive polymer, both satin, plain
    a, b = 0, 32
    assert (class_attributes()[a] != class_attributes()[b]).sum() == 1

    def renders(class_id, samples):
        return np.stack([render_knife(class_id, k, size=32) for k in samples]).astype(np.float32)

    ims_a, ims_a2, ims_b = renders(a, range(12)), renders(a, range(12, 24)), renders(b, range(12))
    within = np.abs(ims_a.mean(0) - ims_a2.mean(0)).mean()  # same class, other samples
    between = np.abs(ims_a.mean(0) - ims_b.mean(0)).mean()  # the hard pair
    nuisance = np.abs(ims_a[0] - ims_a[1]).mean()  # two samples of one class
    assert between > 1.3 * within  # the class shows in the mean image...
    assert nuisance > between  # ...but single images vary more than the pair's class means differ
