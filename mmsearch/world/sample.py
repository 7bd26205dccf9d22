"""Write a small demo folder of shapes-world images and text notes.

    python -m mmsearch.world.sample OUT_DIR --seed 7 --n 48

Creates ``OUT_DIR/images/*.png`` (single- and two-object scenes, named after their
content, e.g. ``red_circle_003.png`` or ``blue_star_and_green_square_017.png``),
``OUT_DIR/notes/*.txt`` (short notes that mention shapes) and ``OUT_DIR/manifest.json``
(the structured record and canonical caption of every image). The bundled demo videos
(``samples/videos``) come from :mod:`mmsearch.world.videos` (``python -m mmsearch.world.videos --samples DIR``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmsearch.world import shapes as W

NOTES: dict[str, str] = {
    "shopping.txt": "Shopping list for the party: balloons, a yellow star for the top of "
                    "the cake, paper plates and some orange napkins.\n",
    "traffic.txt": "Remember: a red circle with a bar means no entry, and the green "
                   "light lets you go.\n",
    "geometry.txt": "Homework: measure the angles of a blue triangle and prove that they "
                    "add up to 180 degrees.\n",
    "garden.txt": "Plant the purple flowers in a hexagon-shaped bed next to the pond; "
                  "the cyan tiles go around it.\n",
    "first_aid.txt": "The first aid kit is the box with a red cross on the lid, on the "
                     "top shelf in the kitchen.\n",
    "quilt.txt": "Grandma's quilt pattern: a pink square in every corner and a large "
                 "green circle in the middle.\n",
}


def _image_name(scene: W.Scene, i: int) -> str:
    parts = [f"{o.colour}_{o.shape}" for o in scene.objects]
    return "_and_".join(parts) + f"_{i:03d}.png"


def write_samples(out_dir: str | Path, seed: int = 7, n: int = 48, size: int = 80,
                  two_object_rate: float = 0.25) -> dict:
    """Write the demo folder; returns the manifest (also saved as ``manifest.json``)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "notes").mkdir(parents=True, exist_ok=True)
    scenes = W.generate(seed, n, size=size, two_object_rate=two_object_rate)
    items = []
    for i, sc in enumerate(scenes):
        name = _image_name(sc, i)
        sc.image.save(out / "images" / name, format="PNG", optimize=True)
        items.append({
            "file": f"images/{name}",
            "caption": sc.caption,
            "relation": sc.relation,
            "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size,
                         "position": o.position} for o in sc.objects],
        })
    notes = []
    for fname, text in NOTES.items():
        (out / "notes" / fname).write_text(text, encoding="utf-8")
        notes.append(f"notes/{fname}")
    manifest = {"generator": "mmsearch.world.shapes", "seed": seed, "n": n, "size": size,
                "two_object_rate": two_object_rate, "images": items, "notes": notes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--two-object-rate", type=float, default=0.25)
    args = ap.parse_args(argv)
    m = write_samples(args.out_dir, args.seed, args.n, args.size, args.two_object_rate)
    print(f"wrote {len(m['images'])} images and {len(m['notes'])} notes to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
