"""The Python side of tests/unit/test_image_process.c: transformers' Qwen2VLImageProcessor (its
PIL backend, which runs without torch) and Pillow are the references.

  python image_process_ref.py DIR

Writes
  DIR/smart_resize.txt  "h w factor min_pixels max_pixels H W" per case, or "... E" where
                        transformers' smart_resize raises (or returns an empty side, which Pillow
                        then refuses): a sweep of tiny, huge, odd and extreme-aspect sizes;
  DIR/cases.txt         "name kind in_w in_h out_w out_h min_pixels max_pixels" per image, with
                        NAME.in.rgb (the input, HWC uint8) and NAME.pil.rgb (Pillow's
                        Image.resize((out_w, out_h), BICUBIC) of it). kinds "proc" and "cfg" also
                        have NAME.pv.f32 (the processor's pixel_values, float32 [patches, 1176])
                        and NAME.grid ("t h w", image_grid_thw): "proc" from the processor run
                        with size={shortest_edge: min_pixels, longest_edge: max_pixels}, "cfg"
                        from the processor from_pretrained loads from NAME.pre/ (a
                        preprocessor_config.json: the published one, and variants).
Inputs: scikit-image's sample photographs (whole and cropped to odd sizes) and synthetic images
with the sharpest edges (most overshoot to clip), noise, and degenerate sizes; resizes on both
sides of Pillow 13's pass-order rule and at random sizes.
"""
import json
import os
import sys

import numpy as np
from PIL import Image
from skimage import data
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

DEFAULT = (56 * 56, 28 * 28 * 1280)
PUBLISHED = (56 * 56, 28 * 28 * 16384)  # Qwen2-VL checkpoints' preprocessor_config.json
SMALL = (28 * 28, 256 * 28 * 28)


# Qwen/Qwen2-VL-2B-Instruct's preprocessor_config.json as published.
PUBLISHED_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}
# size with both edges, max_pixels over it, other mean / std / rescale.
CUSTOM_CONFIG = {
    "size": {"shortest_edge": 784, "longest_edge": 200704},
    "max_pixels": 150000,
    "image_mean": [0.5, 0.25, 0.125],
    "image_std": [0.5, 0.75, 0.3],
    "rescale_factor": 0.004,
    "image_processor_type": "Qwen2VLImageProcessor",
}
SCALAR_CONFIG = {"image_mean": 0.45, "image_std": 0.27, "image_processor_type": "Qwen2VLImageProcessor"}


def sweep(path):
    rng = np.random.default_rng(7)
    cases = []
    for h in range(1, 65):
        for w in range(1, 65):
            cases.append((h, w, 28, *DEFAULT))
    sides = [1, 2, 13, 14, 15, 27, 28, 29, 41, 42, 43, 55, 56, 57, 69, 70, 71, 97, 100, 111, 112, 113, 200, 224,
             225, 300, 333, 448, 451, 500, 512, 600, 640, 700, 777, 1000, 1024, 1080, 1411, 1920, 2048, 3000,
             4032, 5000, 8000, 10000, 16384, 20000]
    for params in (DEFAULT, PUBLISHED, SMALL, (1, 28 * 28), (10000, 5000), (56 * 56, 56 * 56)):
        for h in sides:
            for w in sides:
                cases.append((h, w, 28, *params))
    for a, b in [(1, 200), (1, 201), (2, 400), (2, 401), (3, 600), (3, 601), (5, 1000), (5, 1001), (7, 1400),
                 (10, 2001), (28, 5600), (28, 5601), (100, 20000), (100, 20001), (1, 1), (199, 39800)]:
        cases += [(a, b, 28, *DEFAULT), (b, a, 28, *DEFAULT), (a, b, 28, *PUBLISHED), (b, a, 14, *SMALL)]
    for _ in range(3000):
        h, w = np.exp(rng.uniform(0, np.log(20000), size=2)).astype(int) + 1
        mn, mx = [DEFAULT, PUBLISHED, SMALL][rng.integers(3)]
        cases.append((int(h), int(w), 28, mn, mx))
    errors = 0
    with open(path, "w") as f:
        for h, w, factor, mn, mx in cases:
            try:
                H, W = smart_resize(h, w, factor=factor, min_pixels=mn, max_pixels=mx)
                out = "E" if H <= 0 or W <= 0 else f"{H} {W}"
            except ValueError:
                out = "E"
            errors += out == "E"
            f.write(f"{h} {w} {factor} {mn} {mx} {out}\n")
    return len(cases), errors


def photos():
    left, _, _ = data.stereo_motorcycle()
    return {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "hubble": data.hubble_deep_field(),
        "retina": data.retina(),
        "motorcycle": left,
    }


def synthetic():
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:64, 0:64]
    checker = (((x // 3 + y // 5) % 2) * 255).astype(np.uint8)
    return {
        "noise": rng.integers(0, 256, size=(53, 37, 3), dtype=np.uint8),
        "checker": np.stack([checker, 255 - checker, checker[::-1]], axis=-1),
        "pixel": np.array([[[255, 0, 7]]], dtype=np.uint8),
        "tiny": rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8),
        "strip": rng.integers(0, 256, size=(1, 150, 3), dtype=np.uint8),
        "tall": rng.integers(0, 256, size=(200, 13, 3), dtype=np.uint8),
    }


def main(root):
    os.makedirs(root, exist_ok=True)
    n, errors = sweep(os.path.join(root, "smart_resize.txt"))
    p, s = photos(), synthetic()
    # (name, image, kind, target (w, h) for "resize", pixel limits for "proc")
    cases = [(k, v, "proc", None, DEFAULT) for k, v in p.items()]
    cases += [
        ("coffee_odd", p["coffee"][1:398, 3:590], "proc", None, DEFAULT),
        ("astronaut_odd", p["astronaut"][7:300, 5:488], "proc", None, SMALL),
        ("retina_small", p["retina"], "proc", None, SMALL),
        ("chelsea_big", p["chelsea"], "proc", None, PUBLISHED),
        ("hubble_strip", p["hubble"][400:433, :], "proc", None, DEFAULT),
    ]
    cases += [(k, v, "proc", None, DEFAULT) for k, v in s.items()]
    # kind "cfg": the processor loaded by from_pretrained from a preprocessor_config.json.
    cases += [
        ("cfg_published", p["hubble"], "cfg", None, PUBLISHED_CONFIG),
        ("cfg_custom", p["coffee"], "cfg", None, CUSTOM_CONFIG),
        ("cfg_scalar", p["chelsea"], "cfg", None, SCALAR_CONFIG),
    ]
    cases += [
        ("astronaut_r", p["astronaut"], "resize", (301, 199), None),
        ("coffee_up", p["coffee"], "resize", (1234, 1001), None),
        ("chelsea_down", p["chelsea"], "resize", (17, 9), None),
        ("rocket_v", p["rocket"], "resize", (640, 100), None),
        ("rocket_h", p["rocket"], "resize", (100, 427), None),
        ("hubble_1", p["hubble"], "resize", (1, 1), None),
        ("retina_col", p["retina"], "resize", (999, 1), None),
        ("noise_up", s["noise"], "resize", (371, 530), None),
        ("checker_r", s["checker"], "resize", (151, 97), None),
        ("checker_down", s["checker"], "resize", (7, 61), None),
        ("motor_same", p["motorcycle"], "resize", (p["motorcycle"].shape[1], p["motorcycle"].shape[0]), None),
    ]
    # Pillow 13 runs the vertical pass first when the height loses more than twice as many pixels
    # as the width: both sides of that boundary, then random sizes of noise.
    square = np.random.default_rng(3).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    for ow, oh in [(60, 19), (60, 20), (80, 59), (80, 60), (130, 99), (99, 97), (99, 98)]:
        cases.append((f"order_{ow}x{oh}", square, "resize", (ow, oh), None))
    rng = np.random.default_rng(13)
    for i in range(40):
        iw, ih, ow, oh = (int(v) for v in rng.integers(1, 160, size=4))
        img = rng.integers(0, 256, size=(ih, iw, 3), dtype=np.uint8)
        cases.append((f"random{i}", img, "resize", (ow, oh), None))
    with open(os.path.join(root, "cases.txt"), "w") as f:
        for name, img, kind, target, limits in cases:
            img = np.ascontiguousarray(img)
            h, w = img.shape[:2]
            mn, mx = limits if isinstance(limits, tuple) else (0, 0)
            if kind in ("proc", "cfg"):
                if kind == "cfg":
                    pre = os.path.join(root, f"{name}.pre")
                    os.makedirs(pre, exist_ok=True)
                    with open(os.path.join(pre, "preprocessor_config.json"), "w") as g:
                        json.dump(limits, g, indent=2)
                    proc = Qwen2VLImageProcessorPil.from_pretrained(pre)
                    mn, mx = proc.size.shortest_edge, proc.size.longest_edge
                else:
                    proc = Qwen2VLImageProcessorPil(size={"shortest_edge": mn, "longest_edge": mx})
                out_h, out_w = smart_resize(h, w, factor=28, min_pixels=mn, max_pixels=mx)
                res = proc(images=Image.fromarray(img), return_tensors="np")
                pv, grid = res["pixel_values"], res["image_grid_thw"][0]
                assert pv.dtype == np.float32 and tuple(grid[1:] * 14) == (out_h, out_w), name
                pv.tofile(os.path.join(root, f"{name}.pv.f32"))
                with open(os.path.join(root, f"{name}.grid"), "w") as g:
                    g.write(" ".join(str(int(x)) for x in grid) + "\n")
            else:
                out_w, out_h = target
            img.tofile(os.path.join(root, f"{name}.in.rgb"))
            pil = np.asarray(Image.fromarray(img).resize((out_w, out_h), Image.BICUBIC))
            pil.tofile(os.path.join(root, f"{name}.pil.rgb"))
            f.write(f"{name} {kind} {w} {h} {out_w} {out_h} {mn} {mx}\n")
    print(f"image_process_ref: {n} smart_resize cases ({errors} refused), {len(cases)} images")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: image_process_ref.py DIR")
    main(sys.argv[1])
