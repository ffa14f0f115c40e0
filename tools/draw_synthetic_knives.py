"""Draw docs/images/synthetic_knives.png: 8 synthetic-knife classes x 6 samples, in hard pairs.

Rows come in pairs of classes that differ in exactly one attribute (profile, finish, handle,
profile), so the figure shows how fine the distinctions are under the nuisances.

    python -m tools.draw_synthetic_knives [--size 96] [--samples 6] [--out docs/images/synthetic_knives.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from knifejax.atomic_write import save_image_atomically
from knifejax.data.synthetic import FINISHES, FITTINGS, HANDLES, PROFILES, knife_class, render_knife


def class_id(profile: str, handle: str, finish: str) -> int:
    """The class with these attributes (its fitting follows from profile and handle)."""
    n_p, n_h = len(PROFILES), len(HANDLES)
    cid = PROFILES.index(profile) + n_p * HANDLES.index(handle) + n_p * n_h * FINISHES.index(finish)
    kc = knife_class(cid)
    assert (PROFILES[kc.profile], HANDLES[kc.handle], FINISHES[kc.finish]) == (profile, handle, finish)
    return cid


# (class a, class b, what differs)
PAIRS = [
    (class_id("drop-point", "wood", "satin"), class_id("clip-point", "wood", "satin"), "profile"),
    (class_id("tanto", "red polymer", "damascus"), class_id("tanto", "red polymer", "mirror"), "finish"),
    (class_id("sheepsfoot", "bone", "black-coated"), class_id("sheepsfoot", "steel", "black-coated"), "handle"),
    (class_id("dagger", "black polymer", "satin"), class_id("kukri", "black polymer", "satin"), "profile"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    default_out = Path(__file__).resolve().parents[1] / "docs/images/synthetic_knives.png"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()

    size, pad, label_w = args.size, 4, 300
    rows = [(cid, what) for a, b, what in PAIRS for cid in (a, b)]
    gap = 10  # extra space between pairs
    width = label_w + args.samples * (size + pad) + pad
    height = len(rows) * (size + pad) + (len(PAIRS) - 1) * gap + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    y = pad
    for r, (cid, what) in enumerate(rows):
        kc = knife_class(cid)
        lines = [
            f"class {cid}",
            PROFILES[kc.profile],
            f"{HANDLES[kc.handle]} handle",
            f"{FINISHES[kc.finish]} blade",
            FITTINGS[kc.fitting],
        ]
        draw.text((pad, y + 2), lines[0], fill=(120, 120, 120), font=small)
        for k, line in enumerate(lines[1:]):
            draw.text((pad, y + 18 + 17 * k), line, fill="black", font=font)
        if r % 2 == 0:
            draw.text((label_w - 110, y + size - 10), f"hard pair: {what}", fill=(180, 40, 40), font=small)
        for s in range(args.samples):
            image = render_knife(cid, s, size=size, seed=args.seed)
            sheet.paste(Image.fromarray(np.asarray(image)), (label_w + s * (size + pad), y))
        y += size + pad + (gap if r % 2 == 1 else 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomically(args.out, sheet, optimize=True)
    print(f"wrote {args.out} ({width}x{height})")


if __name__ == "__main__":
    main()
