"""The real-photo incremental check of issue 5: grow a clustered, named library by 20 % and score it.

1. Copy LFW-dev photos of the `report` half (identities never used for tuning) into a nested folder tree,
   holding back a seeded 20 % of the photos.
2. `facecluster cluster DIR`, then name every cluster of two or more faces after the folder most of its
   faces come from (what a user would do), and make two corrections: move one face of a named cluster to
   another person and reject ("not this person") one face of another.
3. Copy the held-back photos in and run the same `facecluster cluster DIR` again (incremental by default).
4. Report, for the new faces of people who already have a name, the fraction that got the right name,
   a wrong name, or none; and check that every earlier name and both corrections are intact.

    python benchmarks/incremental_lfw.py --photos 1000

Prints one JSON object. Needs ../shared (weights and lfw-dev).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def central_faces(conn) -> dict[int, tuple[str, int | None, int | None]]:
    """face id -> (identity from the folder name, person id, cluster id) for the face nearest each photo's centre."""
    rows = conn.execute(
        "SELECT f.id, f.photo_id, p.path, p.width, p.height, f.x1, f.y1, f.x2, f.y2, f.person_id, f.cluster_id "
        "FROM faces f JOIN photos p ON p.id = f.photo_id WHERE f.ignored = 0"
    ).fetchall()
    best: dict[int, tuple[float, int, str, int | None, int | None]] = {}
    for fid, pid, path, w, h, x1, y1, x2, y2, person, cluster in rows:
        offset = ((x1 + x2) / 2 - w / 2) ** 2 + ((y1 + y2) / 2 - h / 2) ** 2
        if pid not in best or offset < best[pid][0]:
            best[pid] = (offset, fid, Path(path).parent.name, person, cluster)
    return {fid: (name, person, cluster) for _, fid, name, person, cluster in best.values()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--new-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "facenet-casia-webface.pt")
    parser.add_argument("--lfw", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir)")
    args = parser.parse_args()
    if not args.lfw.is_dir() or not args.weights.is_file():
        raise SystemExit(f"needs {args.lfw} and {args.weights}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # a sibling benchmark's photo selection
    from cluster_lfw import cli, select_photos

    from facecluster.catalog import Catalog
    from facecluster.people import move_face, name_cluster, reject_face

    os.environ["FACECLUSTER_WEIGHTS_DIR"] = str(args.weights.parent)
    os.environ["FACECLUSTER_OFFLINE"] = "1"
    work = args.keep or Path(tempfile.mkdtemp(prefix="facecluster-incr-"))
    library, db = work / "library", work / "catalog.db"
    chosen = select_photos(args.lfw, "report", args.photos, 40)
    photos = [(name, p) for name, paths in chosen.items() for p in paths]
    rng = random.Random(args.seed)
    held = set(rng.sample(range(len(photos)), round(args.new_fraction * len(photos))))

    def copy(indices: set[int] | range) -> None:
        for i in indices:
            name, src = photos[i]
            folder = library / name[0].upper() / name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, folder / src.name)

    copy(set(range(len(photos))) - held)
    weights = ["--weights", str(args.weights)]
    first_s, first, _ = cli(db, "cluster", str(library), *weights)

    # Name clusters by their majority folder, as a user would; make two corrections.
    with Catalog.open(db) as catalog:
        before = central_faces(catalog.db.conn)
        by_cluster: dict[int, list[str]] = {}
        for name, _, cluster in before.values():
            if cluster is not None:
                by_cluster.setdefault(cluster, []).append(name)
        named = 0
        for cluster, names in sorted(by_cluster.items()):
            if len(names) >= 2:
                name_cluster(catalog, cluster, Counter(names).most_common(1)[0][0])
                named += 1
        snapshot = dict(catalog.db.conn.execute("SELECT id, person_id FROM faces WHERE person_id IS NOT NULL"))
        people = dict(catalog.db.conn.execute("SELECT id, name FROM people"))
        named_faces = sorted(snapshot)
        moved_face, rejected_face = named_faces[0], named_faces[-1]
        other = next(n for pid, n in people.items() if pid != snapshot[moved_face])
        move_face(catalog, moved_face, other)
        rejected_person = snapshot[rejected_face]
        reject_face(catalog, rejected_face)
        snapshot = dict(catalog.db.conn.execute("SELECT id, person_id FROM faces WHERE person_id IS NOT NULL"))
        known_names = set(catalog.db.conn.execute("SELECT name FROM people").fetchall())

    copy(held)
    second_s, second, _ = cli(db, "cluster", str(library), *weights)

    with Catalog.open(db) as catalog:
        conn = catalog.db.conn
        names = dict(conn.execute("SELECT id, name FROM people"))
        after = central_faces(conn)
        new = {fid: v for fid, v in after.items() if fid not in before}
        known = {n for (n,) in known_names}
        right = wrong = none = 0
        for identity, person, _ in new.values():
            if identity not in known:
                continue
            if person is None:
                none += 1
            elif names.get(person) == identity:
                right += 1
            else:
                wrong += 1
        unknown_new = [v for v in new.values() if v[0] not in known]
        unknown_named = sum(1 for _, person, _ in unknown_new if person is not None)
        now = dict(conn.execute("SELECT id, person_id FROM faces WHERE person_id IS NOT NULL"))
        names_changed = sum(1 for fid, person in snapshot.items() if now.get(fid) != person)
        rejected_back = conn.execute("SELECT person_id FROM faces WHERE id = ?", [rejected_face]).fetchone()[0]
        people_after = conn.execute("SELECT count(*) FROM people").fetchone()[0]
    total_known = right + wrong + none
    print(json.dumps({
        "photos_initial": len(photos) - len(held), "photos_added": len(held), "identities": len(chosen),
        "command": f"facecluster --db {db} cluster {library} --weights {args.weights}",
        "first_run_s": round(first_s, 1), "second_run_s": round(second_s, 1),
        "second_run_mode": second["cluster"]["mode"], "clusters_named": named, "people": len(known),
        "new_faces_of_known_people": total_known,
        "assigned_correctly": round(right / max(total_known, 1), 4),
        "assigned_wrongly": round(wrong / max(total_known, 1), 4),
        "left_unnamed": round(none / max(total_known, 1), 4),
        "new_faces_of_unknown_people": len(unknown_new), "of_which_given_a_name": unknown_named,
        "earlier_names_changed": names_changed,
        "moved_face_still_with": names.get(now.get(moved_face)), "moved_to": other,
        "rejected_face_back_with_rejected_person": rejected_back == rejected_person,
        "people_before_after": [len(known), people_after],
        "load_average_at_end": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
