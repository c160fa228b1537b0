"""What ``--checksum`` adds to a re-run over photos that have not changed.

Copies ``--photos`` LFW photos (mtimes kept, as ``cp -p``) and, with ``--large-photos``, writes that many
4000x3000 JPEGs of camera size into a temporary folder, records them in a fresh catalog once (with a
detector that finds no face: what a re-run costs does not depend on the faces), then times
``detect_paths`` over the unchanged folder ``--repeats`` times without and with ``checksum``, alternating.
The files are in the page cache after the first run, so the figures leave out the disk: on a library that
is not cached, add its size divided by the disk's read speed. Prints ONE JSON object::

    python benchmarks/checksum.py --photos 500 --repeats 15
    python benchmarks/checksum.py --photos 0 --large-photos 40
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


class NoFaces:
    """A detector that finds nothing: recording the files is all this benchmark needs."""

    def detect(self, images: list[np.ndarray]) -> list[list[object]]:
        return [[] for _ in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=500, help="LFW photos (about 9 KB each)")
    parser.add_argument("--large-photos", type=int, default=0, help="4000x3000 JPEGs (a few MB each)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--lfw", type=Path, default=SHARED / "data" / "lfw-dev")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))  # this checkout's facecluster, not an installed one
    from facecluster.catalog import Catalog
    from facecluster.pipeline import detect_paths

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        lfw = sorted(args.lfw.rglob("*.jpg"))
        for source in random.Random(0).sample(lfw, min(args.photos, len(lfw))):
            shutil.copy2(source, folder / source.name)
        rng = np.random.default_rng(0)
        for k in range(args.large_photos):
            # Smooth gradients plus grain: compresses about as a camera photo does.
            y, x = np.mgrid[0:3000, 0:4000]
            base = np.stack([(x * (k + 1)) % 256, (y * 2) % 256, (x + y) % 256], axis=-1).astype(np.int16)
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"large_{k:03d}.jpg", quality=92)
        for path in folder.iterdir():  # written long before the runs: no file is "racy"
            os.utime(path, (1e9, 1e9))
        files = sorted(folder.iterdir())
        size = sum(path.stat().st_size for path in files)
        times: dict[bool, list[float]] = {False: [], True: []}
        with Catalog.open(Path(tmp) / "catalog.db") as catalog:
            detect_paths(catalog, [folder], NoFaces())
            for _ in range(args.repeats):
                for checksum in (False, True):
                    start = time.perf_counter()
                    report = detect_paths(catalog, [folder], lambda: NoFaces(), checksum=checksum)
                    times[checksum].append(time.perf_counter() - start)
                    assert report.detected == 0 and report.skipped == len(files), report
                    assert report.checked == (len(files) if checksum else 0), report
    without, with_checksum = statistics.median(times[False]), statistics.median(times[True])
    added = with_checksum - without
    print(json.dumps({
        "files": len(files),
        "megabytes": round(size / 1e6, 1),
        "repeats": args.repeats,
        "median_s_without": round(without, 4),
        "median_s_checksum": round(with_checksum, 4),
        "added_s": round(added, 4),
        "added_ms_per_file": round(added / len(files) * 1000, 3),
        "hashed_mb_per_s": round(size / 1e6 / added, 1) if added > 0 else None,
        "runs_s_without": [round(t, 4) for t in times[False]],
        "runs_s_checksum": [round(t, 4) for t in times[True]],
    }))


if __name__ == "__main__":
    main()
