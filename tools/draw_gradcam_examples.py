"""Draw docs/images/gradcam_lite0_imagenet.png: Grad-CAM of EfficientNet-Lite0's offline ImageNet weights on
scikit-image's photos, for the predicted class and for a second class, at the default layer and an earlier one.

    python -m tools.draw_gradcam_examples      (needs the `test` extra, for timm's ImageNet class names)
"""

from pathlib import Path

import numpy as np
from skimage import data

import knifejax as kj
from knifejax.explain import grad_cam_and_scores
from knifejax.explain.overlay import denormalize, plot_grid
from tests.reference import import_timm

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "gradcam_lite0_imagenet.png"
PHOTOS = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()}
SECOND_CLASS = {"chelsea": 281, "coffee": 504, "astronaut": 834}  # tabby cat, coffee mug, suit


def main() -> None:
    import_timm()
    from timm.data import ImageNetInfo

    names = ImageNetInfo()
    model = kj.create_model("tf_efficientnet_lite0", pretrained=True)
    model.eval()
    cfg = model.pretrained_cfg
    x = kj.preprocess(list(PHOTOS.values()), cfg)
    images = list(denormalize(x, cfg["mean"], cfg["std"]))
    cells, cams, titles = [], [], []
    for layer, where in ((None, "bn2 (default)"), ("blocks.4", "blocks.4")):
        for targets, which in ((None, "predicted"), (np.array(list(SECOND_CLASS.values())), "other")):
            maps, chosen, probs = map(np.asarray, grad_cam_and_scores(model, x, targets, layer))
            for i, (cam, c) in enumerate(zip(maps, chosen)):
                cells.append(images[i])
                cams.append(cam)
                label = names.index_to_description(int(c)).split(",")[0]
                titles.append(f"{label} ({probs[i, c]:.2f})\n{which}, {where}")
    plot_grid(cells, cams, titles, OUTPUT, columns=3, title="Grad-CAM, tf_efficientnet_lite0 ImageNet weights")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
