"""``facecluster evaluate clusters`` on a small hand-made catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.cluster_metrics import evaluate_catalog, read_truth
from facecluster.errors import DataError
from facecluster.migrations import now


def make_catalog(path: Path, photos_root: Path) -> None:
    """Five photos of two people (folders ada/, bob/), 100x100; clusters: {ada1, ada2, bob1}, {bob2}.

    ada_3 holds two faces: an off-centre one in cluster 1 and a centred unclustered one (the one that
    counts). bob_3 has no face.
    """
    with Catalog.open(path) as catalog:
        db = catalog.db
        db["models"].insert({"id": "m", "kind": "pretrained", "dim": 4, "created_at": now()})
        for cid in (1, 2):
            db["clusters"].insert({"id": cid, "model_id": "m", "size": 0, "created_at": now()})
        photos = ["ada/ada_1.jpg", "ada/ada_2.jpg", "ada/ada_3.jpg", "bob/bob_1.jpg", "bob/bob_2.jpg", "bob/bob_3.jpg"]
        for pid, rel in enumerate(photos, 1):
            db["photos"].insert(
                {"id": pid, "hash": f"h{pid}", "path": str(photos_root / rel), "size": 1, "mtime": 0.0,
                 "width": 100, "height": 100, "added_at": now(), "updated_at": now()}
            )
        faces = [  # (photo, centre x, cluster)
            (1, 50, 1), (2, 50, 1), (3, 10, 1), (3, 52, None), (4, 50, 1), (5, 50, 2),
        ]
        for fid, (pid, cx, cluster) in enumerate(faces, 1):
            db["faces"].insert(
                {"id": fid, "photo_id": pid, "x1": cx - 10, "y1": 40, "x2": cx + 10, "y2": 60, "probability": 0.99,
                 "cluster_id": cluster, "created_at": now()}
            )


def test_evaluate_catalog_from_folders(tmp_path: Path) -> None:
    make_catalog(tmp_path / "c.db", tmp_path / "lib")
    with Catalog.open(tmp_path / "c.db") as catalog:
        result = evaluate_catalog(catalog.db, None)
    m = result.metrics
    # scored: ada1 c1, ada2 c1, ada3 alone, bob1 c1, bob2 c2 -> predicted pairs {a1a2, a1b1, a2b1} = 3,
    # true pairs among them: a1a2 -> precision 1/3; true pairs: a1a2 a1a3 a2a3 b1b2 = 4 -> recall 1/4.
    assert result.photos_scored == 5 and result.photos_without_faces == 1
    assert m.pairwise_precision == pytest.approx(1 / 3)
    assert m.pairwise_recall == pytest.approx(1 / 4)
    assert (m.n_clusters, m.n_unclustered, m.n_identities) == (2, 1, 2)


def test_cli_with_truth_file_json_and_table(tmp_path: Path) -> None:
    make_catalog(tmp_path / "c.db", tmp_path / "lib")
    truth = tmp_path / "lib" / "truth.csv"
    truth.parent.mkdir()
    truth.write_text("path,identity\nada/ada_1.jpg,A\nada/ada_2.jpg,A\nbob/bob_1.jpg,A\nbob/bob_2.jpg,B\nzed/z.jpg,Z\n")
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "c.db"), "evaluate", "clusters", "--truth", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pairwise_f"] == 1.0 and data["bcubed_f"] == 1.0
    assert data["truth_not_in_catalog"] == 1 and data["photos_scored"] == 4
    assert "pairwise F" in result.stderr


def test_cli_needs_exactly_one_truth_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "c.db"), "evaluate", "clusters"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "c.db"), "evaluate", "clusters", "--truth",
                                      str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "Error: cannot read truth file" in result.output


def test_read_truth_formats_and_errors(tmp_path: Path) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a/1.jpg\tAda\n/abs/2.jpg\tBob\n")
    assert read_truth(tsv) == {str(tmp_path / "a" / "1.jpg"): "Ada", "/abs/2.jpg": "Bob"}
    bad = tmp_path / "bad.csv"
    bad.write_text("only-a-path\n")
    with pytest.raises(DataError, match="row 1"):
        read_truth(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_truth(empty)

    header_only = tmp_path / "header.csv"
    header_only.write_text("path,identity\n")
    with pytest.raises(DataError, match="no rows"):
        read_truth(header_only)


def test_nothing_scored_is_an_error_not_a_perfect_score(tmp_path: Path) -> None:
    make_catalog(tmp_path / "c.db", tmp_path / "lib")
    Catalog.open(tmp_path / "empty.db").close()  # evaluate clusters never creates a catalog
    (tmp_path / "t").mkdir()
    # Paths written relative to the wrong folder: they resolve under t/, where no photo of the catalog is.
    wrong = tmp_path / "t" / "truth.csv"
    wrong.write_text("path,identity\nlib/ada/ada_1.jpg,A\nlib/bob/bob_1.jpg,B\n")
    faceless = tmp_path / "faceless.csv"
    faceless.write_text("lib/bob/bob_3.jpg,B\n")
    cases = {
        "none of the 2 photos of the truth file is in the catalog": (tmp_path / "c.db", ["--truth", str(wrong)]),
        "has no detected, non-ignored face": (tmp_path / "c.db", ["--truth", str(faceless)]),
        "the catalog holds no photos": (tmp_path / "empty.db", ["--truth-from-folders"]),
    }
    for message, (db, args) in cases.items():
        result = CliRunner().invoke(cli, ["--db", str(db), "evaluate", "clusters", "--json", *args])
        assert result.exit_code == 1 and message in result.stderr, (message, result.output)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "t" / "lib" / "ada" / "ada_1.jpg") in CliRunner().invoke(
        cli, ["--db", str(tmp_path / "c.db"), "evaluate", "clusters", "--truth", str(wrong)]).stderr
