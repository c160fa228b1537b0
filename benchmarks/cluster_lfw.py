"""The real-photo check of issue 3: `facecluster cluster DIR` on ~1,000 LFW photos, scored by folder name.

Identities of ``lfw-dev`` with at least two photos are split in two fixed halves by a hash of their name:
``tune`` (used to choose the default threshold) and ``report`` (used for the figure we report), so the
threshold is never chosen on the photos it is judged on. The chosen photos are copied into a nested
folder tree (``DIR/<initial>/<Name>/<file>.jpg``) in a temp dir, the CLI runs as a user would run it
(a subprocess, default settings), twice, and the clusters are scored with ``evaluate_catalog`` (the face
nearest the image centre of each photo; truth = the folder name). Prints ONE JSON object::

    python benchmarks/cluster_lfw.py --subset report
    python benchmarks/cluster_lfw.py --subset tune --thresholds 0.8,0.9,1.0,1.1,1.2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def select_photos(lfw: Path, subset: str, n_photos: int, per_identity: int) -> dict[str, list[Path]]:
    """Identities of one half (by sha256 of the name), in hash order, until ``n_photos`` are reached."""
    identities = []
    for folder in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) < 2:
            continue
        digest = hashlib.sha256(folder.name.encode()).hexdigest()
        half = "tune" if int(digest[-1], 16) % 2 == 0 else "report"
        if half == subset:
            identities.append((digest, folder.name, photos[:per_identity]))
    chosen: dict[str, list[Path]] = {}
    total = 0
    for _, name, photos in sorted(identities):
        if total >= n_photos:
            break
        chosen[name] = photos
        total += len(photos)
    return chosen


def copy_tree(chosen: dict[str, list[Path]], target: Path) -> int:
    """Copy into ``target/<initial>/<Name>/``; returns the number of photos."""
    count = 0
    for name, photos in chosen.items():
        folder = target / name[0].upper() / name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in photos:
            shutil.copy2(photo, folder / photo.name)
            count += 1
    return count


def cli(db: Path, *args: str) -> tuple[float, dict, int]:
    """Run ``facecluster --db DB ARGS --json -q``; returns (seconds, parsed JSON, exit code)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "facecluster", "--db", str(db), *args, "--json", "-q"],
        capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise SystemExit(f"facecluster {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout), done.returncode


def score(db: Path) -> dict:
    """Pairwise and BCubed scores of the catalog's clusters against the folder names."""
    from facecluster.catalog import Catalog
    from facecluster.cluster_metrics import evaluate_catalog

    with Catalog.open(db) as catalog:
        return evaluate_catalog(catalog.db).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", choices=["tune", "report"], default="report")
    parser.add_argument("--photos", type=int, default=1000, help="stop adding identities at this many photos")
    parser.add_argument("--per-identity", type=int, default=40, help="at most this many photos per identity")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "facenet-casia-webface.pt")
    parser.add_argument("--lfw", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--thresholds", default="", help="also re-cluster (--full) at these thresholds and score each")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir)")
    args = parser.parse_args()
    if not args.lfw.is_dir() or not args.weights.is_file():
        raise SystemExit(f"needs {args.lfw} and {args.weights}")
    os.environ["FACECLUSTER_WEIGHTS_DIR"] = str(args.weights.parent)
    os.environ["FACECLUSTER_OFFLINE"] = "1"
    work = args.keep or Path(tempfile.mkdtemp(prefix="facecluster-lfw-"))
    work.mkdir(parents=True, exist_ok=True)
    library, db = work / "library", work / "catalog.db"
    chosen = select_photos(args.lfw, args.subset, args.photos, args.per_identity)
    n = copy_tree(chosen, library)
    weights = ["--weights", str(args.weights)]
    first_s, first, first_rc = cli(db, "cluster", str(library), *weights)
    second_s, second, _ = cli(db, "cluster", str(library), *weights)
    result = {
        "subset": args.subset,
        "photos": n,
        "identities": len(chosen),
        "command": f"facecluster --db {db} cluster {library} --weights {args.weights}",
        "first_run_s": round(first_s, 1),
        "second_run_s": round(second_s, 2),
        "second_over_first": round(second_s / first_s, 4),
        "first_exit_code": first_rc,
        "photos_per_s_first_run": round(n / first_s, 2),
        "faces": first["cluster"]["faces"],
        "cluster_report": first["cluster"],
        "second_run_mode": second["cluster"]["mode"],
        "model_id": first["embed"]["model_id"],
        "scores_default": score(db),
        "load_average_at_end": os.getloadavg()[0],
    }
    sweep = []
    for text in filter(None, args.thresholds.split(",")):
        seconds, out, _ = cli(db, "cluster", "--full", "--threshold", text, *weights)
        sweep.append({"threshold": float(text), "seconds": round(seconds, 2), "clusters": out["cluster"]["clusters"],
                      **{k: v for k, v in score(db).items() if k.startswith(("pairwise", "bcubed"))}})
    if sweep:
        result["thresholds"] = sweep
    print(json.dumps(result))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
