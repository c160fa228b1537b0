"""LFW accuracy of crop and test-time-augmentation variants, on one set of detections.

Detects every image of the pairs once with our MTCNN (cached), then for each crop variant embeds every
image and its mirror once (cached features), and scores each variant and each sum of variants, with and
without flip averaging, under the shipped protocol (10 folds, training-fold mean subtracted, threshold
from the other nine folds). A nested choice (the variant best on nine folds, applied to the tenth) gives
the figure one could honestly claim for "pick the best variant". Prints ONE JSON object::

    python benchmarks/lfw_variants.py --variants margin32,margin24,align32,bicubic32 \\
        --specs margin32,margin24+margin32 --cache /tmp/lfw-variants

Variants: ``marginN`` (our crop: box + N px of the 160 crop, bilinear), ``alignN`` (5-landmark similarity
alignment), ``sandbergN`` (facenet's align_dataset_mtcnn geometry: N original pixels, clipped to the
photo), ``squareN`` (the box made square first), ``bicubicN`` (as margin, bicubic resize),
``shiftX_Y`` (margin 32, box moved by X, Y pixels), ``bgrN`` (as margin, colour channels reversed: a check
that the weights expect RGB, as the TensorFlow original was trained on, and not OpenCV's BGR).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def detections(images: Path, paths: list[Path], cache: Path) -> dict[Path, list]:
    """Our MTCNN's faces for every image (cached in ``cache/detections.pkl``)."""
    from facecluster.detect import MTCNNDetector
    from facecluster.images import load_image

    file = cache / "detections.pkl"
    if file.exists():
        with file.open("rb") as f:
            return pickle.load(f)
    detector = MTCNNDetector.pretrained()
    found: dict[Path, list] = {}
    for start in range(0, len(paths), 16):
        chunk = paths[start:start + 16]
        for path, faces in zip(chunk, detector.detect([load_image(p).pixels for p in chunk]), strict=True):
            found[path] = faces
    with file.open("wb") as f:
        pickle.dump(found, f)
    return found


def crop(variant: str, pixels: np.ndarray, face: object) -> np.ndarray:
    """One 160x160 crop of ``face`` under ``variant`` (see the module docstring)."""
    from PIL import Image

    from facecluster.align import CentreFace, _expanded_box, crop_face

    x1, y1, x2, y2 = np.asarray(face.box, np.float64)  # type: ignore[attr-defined]
    if variant.startswith("margin"):
        return crop_face(pixels, face, 160, int(variant[6:]))
    if variant.startswith("bgr"):  # the margin crop; ``features`` reverses the channels of every crop
        return crop_face(pixels, face, 160, int(variant[3:]))
    if variant.startswith("align"):
        return crop_face(pixels, face, 160, int(variant[5:]), align=True)
    if variant.startswith("square"):
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        return crop_face(pixels, CentreFace((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)), 160,
                         int(variant[6:]))
    if variant.startswith("shift"):
        dx, dy = (int(v) for v in variant[5:].split("_"))
        return crop_face(pixels, CentreFace((x1 + dx, y1 + dy, x2 + dx, y2 + dy)), 160, 32)
    if variant.startswith("bicubic"):
        b = _expanded_box(np.array([x1, y1, x2, y2]), 160, int(variant[7:]))
        region = Image.fromarray(pixels).crop(tuple(int(round(v)) for v in b))
        return np.asarray(region.resize((160, 160), Image.Resampling.BICUBIC))
    if variant.startswith("sandberg"):
        half = int(variant[8:]) // 2
        h, w = pixels.shape[:2]
        b = np.array([x1, y1, x2, y2]).astype(np.int32)
        left, top, right, bottom = max(b[0] - half, 0), max(b[1] - half, 0), min(b[2] + half, w), min(b[3] + half, h)
        region = Image.fromarray(pixels[top:bottom, left:right])
        return np.asarray(region.resize((160, 160), Image.Resampling.BILINEAR))
    raise SystemExit(f"unknown variant {variant!r}")


def features(variant: str, paths: list[Path], found: dict[Path, list], weights: Path, cache: Path) -> dict:
    """Un-normalised embeddings of each image's crop and of its mirror (cached per variant)."""
    from facecluster.align import centre_face, crop_face
    from facecluster.config import EmbedConfig
    from facecluster.embed import load_embedder
    from facecluster.evaluate import choose_face
    from facecluster.images import load_image

    file = cache / f"features-{variant}.pkl"
    if file.exists():
        with file.open("rb") as f:
            return pickle.load(f)
    embedder = load_embedder(weights=weights, config=EmbedConfig(flip=False))
    out: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(paths), 32):
        chunk = paths[start:start + 32]
        crops = []
        for path in chunk:
            pixels = load_image(path).pixels
            faces = found[path]
            if faces:  # the face facenet's align rule keeps; a centre crop where none was found
                chosen = faces[choose_face(np.array([f.box for f in faces]), pixels.shape[:2])]
                crops.append(crop(variant, pixels, chosen))
            else:
                crops.append(crop_face(pixels, centre_face(pixels.shape[:2]), 160, 32))
        batch = np.stack(crops)
        if variant.startswith("bgr"):  # every crop, the centre crops of faceless images too
            batch = np.ascontiguousarray(batch[..., ::-1])
        f = embedder.raw_features(batch, mirror=True)  # the shipped inference path and precision
        for i, path in enumerate(chunk):
            out[path] = (f[i], f[len(chunk) + i])
    with file.open("wb") as f:
        pickle.dump(out, f)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--pairs", type=Path, default=SHARED / "data" / "lfw-dev-pairs.txt")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "facenet-casia-webface.pt")
    parser.add_argument("--variants", default="margin32,margin24,margin44")
    parser.add_argument("--specs", default="", help="comma-separated sums of variants, e.g. margin24+margin32")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facecluster-lfw-variants"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    os.environ.setdefault("FACECLUSTER_WEIGHTS_DIR", str(args.weights.parent))
    from facecluster.evaluate import centred_distances, parse_pairs, verification_metrics

    args.cache.mkdir(parents=True, exist_ok=True)
    pairs = parse_pairs(args.pairs)
    paths = sorted({p for pair in pairs for p in pair.paths(args.images)})
    start = time.perf_counter()
    found = detections(args.images, paths, args.cache)
    variants = [v for v in args.variants.split(",") if v]
    feats = {v: features(v, paths, found, args.weights, args.cache) for v in variants}
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    specs = variants + [s for s in args.specs.split(",") if s]
    result: dict = {"pairs": len(pairs), "images": len(paths), "no_face": sum(1 for p in paths if not found[p]),
                    "variants": {}}
    distances = {}
    for spec in specs:
        for flip in (True, False):
            def vector(path: Path, parts: list[str] = spec.split("+"), flip: bool = flip) -> np.ndarray:
                return sum(feats[v][path][0] + (feats[v][path][1] if flip else 0) for v in parts)

            a = np.stack([vector(p.paths(args.images)[0]) for p in pairs])
            b = np.stack([vector(p.paths(args.images)[1]) for p in pairs])
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            b /= np.linalg.norm(b, axis=1, keepdims=True)
            name = spec + ("+flip" if flip else "")
            distances[name] = centred_distances(a, b, folds)
            r = verification_metrics(distances[name], same, folds)
            result["variants"][name] = {"accuracy": round(r.accuracy, 5), "accuracy_std": round(r.accuracy_std, 5),
                                        "val_at_far_1e-3": round(r.val, 5)}
    # Nested: per held-out fold, the variant with the best accuracy on the other nine (threshold from them).
    from facecluster.evaluate import best_threshold

    correct = []
    for k, fold in enumerate(np.unique(folds)):
        train = folds != fold
        scores = {name: best_threshold(d[k][train], same[train]) for name, d in distances.items()}
        best = max(scores, key=lambda name: scores[name][1])
        correct.append(float(np.mean((distances[best][k][~train] < scores[best][0]) == same[~train])))
    result["nested_choice"] = {"accuracy": round(float(np.mean(correct)), 5),
                               "accuracy_std": round(float(np.std(correct)), 5)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
