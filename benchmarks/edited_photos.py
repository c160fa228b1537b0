"""Do faces keep their ids (and so their names and corrections) when a photo is edited in place?

For each edit, a fresh copy of the same LFW-dev photos is detected (the real MTCNN, through
``detect_paths``), every photo is edited and saved under its own name, and the library is detected again.
Reported per edit: the faces before, the faces the detector finds in the edited photos, and how many of
the old face ids are still there (a face id kept is a name and corrections kept).

    python benchmarks/edited_photos.py --photos 30

Edits: re-saved at JPEG quality 75; cropped by 5 to 30 pixels per side; resized to 0.5, 0.75 and 1.5 of
the size; turned upside down; turned a quarter clockwise. Prints one JSON object. Needs ../shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))

Edit = Callable[[Image.Image, random.Random], Image.Image]


def resized(scale: float) -> Edit:
    return lambda image, _: image.resize((round(image.width * scale), round(image.height * scale)),
                                         Image.Resampling.LANCZOS)


def turned(quarters: int) -> Edit:
    return lambda image, _: image.rotate(-90 * quarters, expand=True)  # PIL turns counter-clockwise


def cropped(image: Image.Image, rng: random.Random) -> Image.Image:
    left, top, right, bottom = (rng.randint(5, 30) for _ in range(4))
    return image.crop((left, top, image.width - right, image.height - bottom))


EDITS: dict[str, tuple[Edit, int]] = {  # name -> (edit, JPEG quality it is saved at)
    "re-saved q75": (lambda image, _: image, 75),
    "cropped 5-30 px": (cropped, 92),
    "resized 0.5": (resized(0.5), 92),
    "resized 0.75": (resized(0.75), 92),
    "resized 1.5": (resized(1.5), 92),
    "turned 180": (turned(2), 92),
    "turned 90 clockwise": (turned(1), 92),
}


def face_ids(catalog) -> set[tuple[str, int]]:
    return {(Path(path).name, face) for face, path in catalog.db.execute(
        "SELECT f.id, p.path FROM faces f JOIN photos p ON p.id = f.photo_id").fetchall()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lfw", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--weights-dir", type=Path, default=SHARED / "weights")
    args = parser.parse_args()
    if not args.lfw.is_dir() or not (args.weights_dir / "mtcnn").is_dir():
        raise SystemExit(f"needs {args.lfw} and {args.weights_dir}/mtcnn")
    os.environ["FACECLUSTER_WEIGHTS_DIR"] = str(args.weights_dir)
    sys.path.insert(0, str(ROOT / "src"))
    from facecluster.catalog import Catalog
    from facecluster.config import DetectConfig
    from facecluster.pipeline import detect_paths, load_detector

    photos = sorted(args.lfw.glob("*/*.jpg"))
    photos = random.Random(args.seed).sample(photos, min(args.photos, len(photos)))
    detector = load_detector(DetectConfig())
    results = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (edit, quality)) in enumerate(EDITS.items()):
            library = Path(tmp) / f"library{k}"
            library.mkdir()
            for photo in photos:
                shutil.copy(photo, library / photo.name)
            catalog = Catalog.open(Path(tmp) / f"catalog{k}.db")
            detect_paths(catalog, [library], detector)
            before = face_ids(catalog)
            rng = random.Random(args.seed)
            for photo in sorted(library.iterdir()):
                with Image.open(photo) as image:
                    edit(image.convert("RGB"), rng).save(photo, quality=quality)
            detect_paths(catalog, [library], detector)
            after = face_ids(catalog)
            catalog.close()
            results[name] = {"faces_before": len(before), "faces_found_after": len(after),
                             "face_ids_kept": len(before & after)}
    print(json.dumps({"photos": len(photos), "seed": args.seed, "edits": results,
                      "seconds": round(time.perf_counter() - started, 1)}, indent=1))


if __name__ == "__main__":
    main()
