"""Do faces keep their ids (and so their names and corrections) when a photo is edited in place?

For each edit, a fresh copy of the same LFW-dev photos is detected (the real MTCNN, through
``detect_paths``), every photo is edited and saved under its own name, and the library is detected again.
Reported per edit: the faces before, the faces the detector finds in the edited photos, and how many of
the old face ids are still there on the same face (a face id kept is a name and corrections kept), and how
many went to a face elsewhere in the photo (wrong: that face would take the name).

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

# An edit returns the edited photo and where it moved a point (x, y) of the original.
Point = tuple[float, float]
Edit = Callable[[Image.Image, random.Random], tuple[Image.Image, Callable[[Point], Point]]]


def resized(scale: float) -> Edit:
    def edit(image: Image.Image, _: random.Random) -> tuple[Image.Image, Callable[[Point], Point]]:
        size = (round(image.width * scale), round(image.height * scale))
        return image.resize(size, Image.Resampling.LANCZOS), lambda p: (p[0] * scale, p[1] * scale)
    return edit


def turned(quarters: int) -> Edit:
    def edit(image: Image.Image, _: random.Random) -> tuple[Image.Image, Callable[[Point], Point]]:
        def move(p: Point) -> Point:
            (x, y), (w, h) = p, image.size
            for _ in range(quarters):  # a clockwise quarter turn: (x, y) -> (h - y, x)
                x, y, w, h = h - y, x, h, w
            return x, y
        return image.rotate(-90 * quarters, expand=True), move  # PIL turns counter-clockwise
    return edit


def cropped(image: Image.Image, rng: random.Random) -> tuple[Image.Image, Callable[[Point], Point]]:
    left, top, right, bottom = (rng.randint(5, 30) for _ in range(4))
    return image.crop((left, top, image.width - right, image.height - bottom)), lambda p: (p[0] - left, p[1] - top)


def unchanged(image: Image.Image, _: random.Random) -> tuple[Image.Image, Callable[[Point], Point]]:
    return image, lambda p: p


EDITS: dict[str, tuple[Edit, int]] = {  # name -> (edit, JPEG quality it is saved at)
    "re-saved q75": (unchanged, 75),
    "cropped 5-30 px": (cropped, 92),
    "resized 0.5": (resized(0.5), 92),
    "resized 0.75": (resized(0.75), 92),
    "resized 1.5": (resized(1.5), 92),
    "turned 180": (turned(2), 92),
    "turned 90 clockwise": (turned(1), 92),
}


def faces(catalog) -> dict[int, tuple[str, float, float, float]]:
    """face id -> (photo file name, box centre x, y, box width)."""
    return {face: (Path(path).name, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1) for face, path, x1, y1, x2, y2 in
            catalog.db.execute("SELECT f.id, p.path, x1, y1, x2, y2 FROM faces f JOIN photos p ON p.id = f.photo_id")}


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
            before = faces(catalog)
            rng = random.Random(args.seed)
            moves = {}
            for photo in sorted(library.iterdir()):
                with Image.open(photo) as image:
                    edited, moves[photo.name] = edit(image.convert("RGB"), rng)
                edited.save(photo, quality=quality)
            detect_paths(catalog, [library], detector)
            after = faces(catalog)
            catalog.close()
            kept = [face for face in before if face in after and after[face][0] == before[face][0]]
            # A kept id is right on the new face nearest to where the edit moved its old face's centre, and
            # wrong on any other (that face would take the name). MTCNN's box of a turned face sits off
            # centre by up to a third of its width, so "nearest" rather than "within so many pixels".
            wrong = 0
            for face in kept:
                file, x, y, _ = before[face]
                moved_x, moved_y = moves[file]((x, y))
                nearest = min((other for other, row in after.items() if row[0] == file),
                              key=lambda other: (after[other][1] - moved_x) ** 2 + (after[other][2] - moved_y) ** 2)
                wrong += nearest != face
            results[name] = {"faces_before": len(before), "faces_found_after": len(after),
                             "face_ids_kept": len(kept) - wrong, "face_ids_kept_elsewhere": wrong}
    print(json.dumps({"photos": len(photos), "seed": args.seed, "edits": results,
                      "seconds": round(time.perf_counter() - started, 1)}, indent=1))


if __name__ == "__main__":
    main()
