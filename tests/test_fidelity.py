"""Fidelity to open_clip: what mmsearch stores equals open_clip's own reference computation.

Real architectures with seeded random weights (the cost and the numerics of a forward pass do not
depend on the weights). The reference is ``preprocess(image) → encode_image → normalise`` on the
image as a viewer sees it: EXIF orientation applied, transparency composited on white, and the
colours converted to RGB *before* resizing (open_clip's transform resizes first and converts
after, which resizes palette images by their palette indices, nearest-neighbour style). Those are
the places where mmsearch deliberately differs from a bare ``preprocess(Image.open(p))``. Every
faster path added later (GPU decode, fp16, batching tricks) must pass this same test. On the CPU
indexing and the query both run on ONNX Runtime at the ``auto`` precision (int8 towers where their
measured fidelity holds), Pillow+numpy preprocessing and reduced JPEG decode: this is their end-to-end
fidelity test against open_clip on torch fp32.
"""

import numpy as np
import pytest
from PIL import Image, ImageOps

from mmsearch import Engine
from mmsearch.query.encode import Query, embed_query

ARCHS = ["ViT-B-32", "RN50"]


def make_images(folder):
    rng = np.random.default_rng(5)
    folder.mkdir()

    def noise(w, h):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    noise(300, 200).save(folder / "plain.jpg", quality=92)
    rgba = noise(120, 160).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 120, dtype=np.uint8), (160, 1))
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "alpha.png")
    noise(64, 64).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    noise(90, 50).convert("L").save(folder / "grey.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    noise(200, 100).save(folder / "rotated.jpg", exif=exif.tobytes(), quality=92)
    noise(2000, 100).save(folder / "wide.png")
    noise(12, 18).save(folder / "tiny.bmp")
    noise(80, 80).convert("CMYK").save(folder / "cmyk.jpg", quality=92)
    return sorted(folder.iterdir())


def reference_view(path):
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    return im.convert("RGB")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_stored_embeddings_match_open_clip_reference(arch, tmp_path):
    import open_clip
    import torch

    paths = make_images(tmp_path / "imgs")
    texts = ["a photo of a cat", "a red bicycle leaning on a wall", "x" * 300]
    (tmp_path / "notes").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "notes" / f"{i}.txt").write_text(t)

    seed = 11
    with Engine.open(tmp_path / "store", model=f"{arch}:random@{seed}", device="cpu", workers=0) as eng:
        report = eng.index([tmp_path / "imgs", tmp_path / "notes"])
        assert report.failed == 0 and report.indexed == len(paths) + len(texts)
        space = eng.store.spaces()[0]
        stored = {}
        for modality in ("image", "text"):
            ids, vecs = eng.store.vectors(space.id, modality)
            for cid, v in zip(ids, vecs):
                stored[eng.store.content_meta([cid])[cid].uris[0]] = v
        query_side = np.stack([embed_query(Query.make(image=p), space, eng.encoder) for p in paths])

    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        ref_img = model.encode_image(torch.stack([preprocess(reference_view(p)) for p in paths]))
        ref_txt = model.encode_text(tokenizer(texts))
    ref_img = torch.nn.functional.normalize(ref_img, dim=-1).numpy()
    ref_txt = torch.nn.functional.normalize(ref_txt, dim=-1).numpy()

    assert len(ref_img) == len(query_side) == len(paths) and len(ref_txt) == len(texts)  # zip below drops nothing
    for p, ref in zip(paths, ref_img):
        got = stored[str(p)]
        cos = float(got @ ref / np.linalg.norm(got))
        assert cos >= 0.999, f"{p.name}: cosine {cos:.5f}"
    for qv, ref, p in zip(query_side, ref_img, paths):
        assert float(qv @ ref) >= 0.999, f"query path {p.name}"
    for i, ref in enumerate(ref_txt):
        got = stored[str(tmp_path / "notes" / f"{i}.txt")]
        assert float(got @ ref / np.linalg.norm(got)) >= 0.999
