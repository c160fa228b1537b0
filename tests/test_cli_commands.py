"""The detect/embed/cluster/label/people/faces commands end to end, with fake models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facecluster import pipeline
from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.errors import EXIT_PARTIAL
from tests.fakes import LIBRARY, FakeDetector, FakeEmbedder, fake_crop, make_library, make_photo


N_FACES = sum(len(v) for v in LIBRARY.values())


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A generated library, a catalog path, and fake models wired into the pipeline's factories."""
    state = {"detectors": [], "embedders": []}

    def detector(config, device="cpu", progress=None):
        state["detectors"].append(FakeDetector())
        return state["detectors"][-1]

    def embedder(weights, model_path, device="cpu", config=None, progress=None):
        state["embedders"].append(FakeEmbedder(model_id="fake:trained" if model_path else "fake:0001"))
        return state["embedders"][-1]

    monkeypatch.setattr(pipeline, "load_detector", detector)
    monkeypatch.setattr(pipeline, "load_embedder", embedder)
    monkeypatch.setattr(pipeline, "default_crop", lambda: fake_crop)
    make_library(tmp_path / "photos")
    state["root"] = tmp_path / "photos"
    state["db"] = tmp_path / "catalog.db"
    return state


def run(env: dict, *args: str, input: str | None = None):
    result = CliRunner().invoke(cli, ["--db", str(env["db"]), *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def people_by_kind(env: dict) -> list[dict]:
    return jsonl(run(env, "people", "--json").stdout)


def test_every_command_has_help_with_an_example() -> None:
    for name in ("detect", "embed", "cluster", "label", "people", "faces"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, name


def test_cluster_groups_the_library_and_prints_json(env: dict) -> None:
    result = run(env, "cluster", str(env["root"]), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["detect"]["detected"] == len(LIBRARY) and out["detect"]["embedded"] == N_FACES
    assert out["cluster"]["mode"] == "full"
    # identities 0, 1, 2 appear in 3 photos each, identity 3 once (noise at min size 2)
    assert sorted(r["faces"] for r in out["clusters"]) == [3, 3, 3]
    assert out["cluster"]["noise"] == 1
    with Catalog.open(env["db"]) as catalog:
        assert catalog.db.execute("SELECT status FROM runs").fetchall() == [("ok",)]


def test_second_run_does_no_work(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    result = run(env, "cluster", str(env["root"]), "--json")
    out = json.loads(result.stdout)
    assert out["detect"]["skipped"] == len(LIBRARY) and out["embed"]["embedded"] == 0
    assert out["cluster"]["mode"] == "unchanged"
    assert len(env["detectors"]) == 1  # the detector was not even built the second time


def test_a_deleted_photo_is_said_and_its_faces_kept(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    (env["root"] / "2021" / "d1.png").unlink()
    result = run(env, "detect", str(env["root"]))
    assert ("1 photo recorded under these folders was not found (deleted, moved away or on a disk not mounted): "
            "their faces and names are kept") in result.stderr
    out = json.loads(run(env, "cluster", str(env["root"]), "--json").stdout)
    assert out["detect"]["missing"] == 1 and out["cluster"]["faces"] == N_FACES
    assert "photos not found (faces kept)" in run(env, "cluster", str(env["root"])).stderr


def test_detect_embed_cluster_separately_and_stdin_paths(env: dict) -> None:
    paths = "\n".join(str(p) for p in sorted(env["root"].rglob("*.png"))) + "\n"
    result = run(env, "detect", "-", "--json", input=paths)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["detected"] == len([k for k in LIBRARY if k.endswith(".png")])
    result = run(env, "embed", "--json")
    assert json.loads(result.stdout)["embedded"] == N_FACES - 2  # the .jpg photo is not in the list
    assert json.loads(run(env, "embed", "--json").stdout)["embedded"] == 0
    assert json.loads(run(env, "embed", "--json", "--force").stdout)["embedded"] == N_FACES - 2
    result = run(env, "cluster", "--json")
    assert json.loads(result.stdout)["cluster"]["faces"] == N_FACES - 2


def test_detect_reads_nul_separated_and_non_utf8_paths_from_stdin(env: dict) -> None:
    # find -print0 | facecluster detect -: a name with a newline is one path; a Latin-1 name (not UTF-8,
    # whatever the locale) is one `failed:` line and exit 3, not an UnicodeDecodeError for the whole list.
    photos = sorted(env["root"].rglob("*.png"))
    odd = env["root"] / "new\nline.png"
    shutil.copy(photos[0], odd)
    latin1 = os.fsencode(env["root"]) + b"/caf\xe9.png"
    shutil.copy(photos[1], latin1)
    listing = b"\0".join(os.fsencode(p) for p in [*photos, odd]) + b"\0" + latin1 + b"\0"
    result = CliRunner().invoke(cli, ["--db", str(env["db"]), "detect", "-", "--json"], input=listing)
    assert result.exit_code == EXIT_PARTIAL, result.output
    report = json.loads(result.stdout)
    assert report["files"] == len(photos) + 2 and report["failed"][0]["path"].endswith("caf\\xe9.png")
    assert report["detected"] + report["copies"] == len(photos) + 1
    assert "not valid UTF-8" in result.stderr and "\0" not in result.stderr
    with Catalog.open(env["db"]) as catalog:
        assert catalog.db.execute("SELECT 1 FROM files WHERE path = ?", [str(odd)]).fetchone()


def test_bad_inputs_are_recorded_with_exit_3(env: dict) -> None:
    bad = env["root"] / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("hello, not a jpeg")
    jpeg = bad / "cut.jpg"
    make_photo(jpeg, [0])
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 3])
    (bad / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    Image.new("1", (20000, 20000)).save(bad / "huge.png")
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(bad / "deep16.png")
    Image.new("CMYK", (64, 64), (0, 100, 100, 0)).save(bad / "cmyk.jpg")
    Image.new("L", (64, 64), 90).save(bad / "grey.jpg")
    result = run(env, "detect", str(env["root"]), "--json")
    assert result.exit_code == EXIT_PARTIAL
    report = json.loads(result.stdout)
    failed = {Path(f["path"]).name for f in report["failed"]}
    assert {"zero.jpg", "text.jpg", "garbage.jpg", "huge.png"} <= failed
    assert not failed & {"deep16.png", "cmyk.jpg", "grey.jpg"}  # odd but valid photos are read
    lines = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(lines) == len(failed) and "Traceback" not in result.stderr
    # A truncated JPEG may be decoded partly (grey below the cut) or refused: either is recorded.
    assert report["detected"] == len(LIBRARY) + 3 + int("cut.jpg" not in failed)
    with Catalog.open(env["db"]) as catalog:
        assert catalog.db.execute("SELECT count(*) FROM faces").fetchone()[0] >= N_FACES
        assert catalog.db.execute("SELECT status FROM runs").fetchone()[0] == "partial"


def test_missing_path_is_a_failure_not_a_crash(env: dict) -> None:
    result = run(env, "detect", str(env["root"] / "nope.jpg"))
    assert result.exit_code == EXIT_PARTIAL and "no such file" in result.stderr


def test_a_folder_without_photos_says_so(env: dict) -> None:
    empty = env["root"].parent / "empty"
    (empty / "videos").mkdir(parents=True)
    (empty / "videos" / "clip.mp4").write_bytes(b"not a photo")
    for command in ("detect", "cluster"):
        result = run(env, command, str(empty))
        assert result.exit_code == 0 and f"no photos found in {empty}" in result.stderr, command
    assert "no photos found" not in run(env, "detect", str(env["root"])).stderr
    assert run(env, "detect", str(empty), "-q").stderr == ""


def test_names_survive_reclustering_and_moves(env: dict, tmp_path: Path) -> None:
    run(env, "cluster", str(env["root"]))
    clusters = [r for r in people_by_kind(env) if r["kind"] == "cluster"]
    first = clusters[0]["id"]
    faces = jsonl(run(env, "faces", "--cluster", str(first)).stdout)
    result = run(env, "label", str(first), "Ada")
    assert result.exit_code == 0, result.output
    named = {f["face_id"] for f in jsonl(run(env, "faces", "--person", "Ada").stdout)}
    assert named == {f["face_id"] for f in faces}
    assert {f["face_id"] for f in jsonl(run(env, "faces", "--person", "ADA").stdout)} == named
    typo = run(env, "faces", "--person", "Adda", "--csv")
    assert typo.exit_code == 1 and typo.stdout == "" and "no person named 'Adda'" in typo.stderr
    # Full re-clustering keeps the name on the same faces and the same cluster id.
    out = json.loads(run(env, "cluster", "--full", "--json").stdout)
    ada = [r for r in out["clusters"] if r["name"] == "Ada"]
    assert ada and ada[0]["clusters"] == [first] and ada[0]["faces"] == len(named)
    # Moving the library keeps faces and names.
    moved = tmp_path / "moved"
    shutil.move(str(env["root"]), str(moved))
    out = json.loads(run(env, "cluster", str(moved), "--json").stdout)
    assert out["detect"]["moved"] == len(LIBRARY) and out["detect"]["detected"] == 0
    again = jsonl(run(env, "faces", "--person", "Ada").stdout)
    assert {f["face_id"] for f in again} == named and all(f["photo"].startswith(str(moved)) for f in again)


def test_new_photos_of_a_named_person_get_the_name(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    cluster = next(r for r in people_by_kind(env) if r["kind"] == "cluster")
    run(env, "label", str(cluster["id"]), "Bo")
    identity_face = jsonl(run(env, "faces", "--cluster", str(cluster["id"])).stdout)[0]
    # Which identity is that cluster? Copy one of its photos' pixels into a new file.
    source = Path(identity_face["photo"])
    new = env["root"] / "2022" / "new.png"
    new.parent.mkdir()
    pixels = np.asarray(Image.open(source)).copy()
    pixels[0, 0] = (127, 127, 127)  # different content, same faces
    Image.fromarray(pixels).save(new)
    out = json.loads(run(env, "cluster", str(env["root"]), "--json").stdout)
    assert out["cluster"]["mode"] == "incremental" and out["cluster"]["assigned"] >= 1
    bo = {f["photo"] for f in jsonl(run(env, "faces", "--person", "Bo").stdout)}
    assert str(new) in bo


def test_label_actions(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    c1, c2, c3 = [r["id"] for r in people_by_kind(env) if r["kind"] == "cluster"]
    assert run(env, "label", str(c1), "Ada").exit_code == 0
    assert run(env, "label", str(c2), "Bob").exit_code == 0
    assert run(env, "label", "--rename", "Bob", "Robert").exit_code == 0
    result = run(env, "label", "--rename", "Robert", "Ada")
    assert result.exit_code == 1 and "merge" in result.stderr
    face = jsonl(run(env, "faces", "--cluster", str(c3)).stdout)[0]["face_id"]
    assert run(env, "label", "--move", str(face), "Ada").exit_code == 0
    assert run(env, "label", "--merge", "Robert", "Ada").exit_code == 0
    people = people_by_kind(env)
    assert [p["name"] for p in people if p["kind"] == "person"] == ["Ada"]
    assert people[0]["faces"] == 3 + 3 + 1
    assert run(env, "label", "--ignore-cluster", str(c3)).exit_code == 0
    assert all(r["id"] != c3 for r in people_by_kind(env))
    result = run(env, "label", "--reject", str(face), "--json")
    assert json.loads(result.stdout)["face"] == face
    assert run(env, "label", "--ignore-face", str(face)).exit_code == 0
    assert face not in {f["face_id"] for f in jsonl(run(env, "faces").stdout)}
    assert run(env, "label", "99", "Nobody").exit_code == 1
    assert run(env, "label").exit_code == 2
    assert run(env, "label", "1", "A", "--merge", "A", "B").exit_code == 2


def test_corrections_survive_full_reclustering(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    c1, c2, _ = [r["id"] for r in people_by_kind(env) if r["kind"] == "cluster"]
    run(env, "label", str(c1), "Ada")
    run(env, "label", str(c2), "Bob")
    moved = jsonl(run(env, "faces", "--cluster", str(c2)).stdout)[0]["face_id"]
    run(env, "label", "--move", str(moved), "Ada")  # the user says: this one is Ada, whatever it looks like
    rejected = jsonl(run(env, "faces", "--person", "Ada").stdout)[0]["face_id"]
    if rejected == moved:
        rejected = jsonl(run(env, "faces", "--person", "Ada").stdout)[1]["face_id"]
    run(env, "label", "--reject", str(rejected))
    ignored = jsonl(run(env, "faces", "--person", "Bob").stdout)[0]["face_id"]
    run(env, "label", "--ignore-face", str(ignored))
    before = {f["face_id"]: f["person"] for f in jsonl(run(env, "faces", "--all").stdout)}
    for _ in range(2):
        run(env, "cluster", "--full")
        after = {f["face_id"]: f for f in jsonl(run(env, "faces", "--all").stdout)}
        assert after[moved]["person"] == "Ada"
        assert after[rejected]["person"] != "Ada"
        assert after[ignored]["ignored"] and after[ignored]["cluster_id"] is None
        for face_id, person in before.items():
            if person and face_id not in (rejected,):
                assert after[face_id]["person"] == person


def test_faces_csv_and_json(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    records = jsonl(run(env, "faces").stdout)
    assert len(records) == N_FACES
    assert set(records[0]) >= {"face_id", "photo", "box", "probability", "cluster_id", "person"}
    csv_text = run(env, "faces", "--csv").stdout.splitlines()
    assert csv_text[0].startswith("face_id,photo,box") and len(csv_text) == N_FACES + 1


def test_people_text_output(env: dict) -> None:
    Catalog.open(env["db"]).close()  # an empty catalog (people no longer creates one)
    assert run(env, "people").exit_code == 0
    run(env, "cluster", str(env["root"]))
    out = run(env, "people").stdout
    assert out.splitlines()[0].split()[:3] == ["kind", "id", "faces"] and "(unnamed)" in out


def test_models_are_never_mixed(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    out = json.loads(run(env, "cluster", "--model", "x.pt", "--json").stdout)
    assert out["embed"]["model_id"] == "fake:trained" and out["embed"]["embedded"] == N_FACES
    assert out["cluster"]["mode"] == "full" and out["cluster"]["faces"] == N_FACES
    with Catalog.open(env["db"]) as catalog:
        assert {r[0] for r in catalog.db.execute("SELECT model_id FROM clusters")} == {"fake:trained"}


def test_switching_model_says_whose_clusters_were_replaced(env: dict) -> None:
    first = run(env, "cluster", str(env["root"]))
    assert "fake:0001" in first.stderr and "were made with" not in first.stderr
    result = run(env, "cluster", "--model", "x.pt", "--json")
    assert json.loads(result.stdout)["cluster"]["replaced_model"] == "fake:0001"
    assert "the clusters were made with model fake:0001: re-clustered everything with fake:trained" in result.stderr
    assert "were made with" not in run(env, "cluster", "--model", "x.pt").stderr
    assert "were made with" not in run(env, "cluster", "--model", "x.pt", "-q").stderr


def test_changed_settings_recluster_everything(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    result = run(env, "cluster", "--min-cluster-size", "1", "--json")
    out = json.loads(result.stdout)
    assert out["cluster"]["mode"] == "full" and out["cluster"]["noise"] == 0 and "settings changed" in result.stderr
    assert json.loads(run(env, "cluster", "--min-cluster-size", "1", "--json").stdout)["cluster"]["mode"] == "unchanged"


def test_cluster_on_an_empty_catalog(env: dict, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(env, "cluster", str(empty), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cluster"]["faces"] == 0
    assert json.loads(run(env, "embed", "--json").stdout)["embedded"] == 0
    assert run(env, "faces").stdout == ""


def test_cluster_json_has_detect_whenever_paths_are_given(env: dict) -> None:
    """`find ... | facecluster cluster - --json` from cron: the same keys whether find printed paths or not."""
    with_paths = json.loads(run(env, "cluster", "-", "--json", input=f"{env['root']}\n").stdout)
    without = json.loads(run(env, "cluster", "-", "--json", input="").stdout)
    assert list(without) == list(with_paths) == ["detect", "embed", "cluster", "clusters"]
    assert without["detect"]["files"] == 0 and without["detect"]["failed"] == []


@pytest.mark.parametrize("workers", [1, 2])  # this thread, or a pool of workers
def test_ctrl_c_leaves_a_consistent_catalog_and_the_next_run_resumes(env: dict, monkeypatch: pytest.MonkeyPatch,
                                                                     workers: int) -> None:
    from facecluster.config import PipelineConfig

    class Interrupted(FakeDetector):
        def detect(self, images):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().detect(images)

    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: Interrupted())
    monkeypatch.setattr(pipeline.detect_paths, "__kwdefaults__",
                        {**pipeline.detect_paths.__kwdefaults__, "pipeline": PipelineConfig(batch_size=3, workers=workers)})
    result = run(env, "cluster", str(env["root"]))
    assert result.exit_code == 130 and "resume" in result.stderr
    with Catalog.open(env["db"]) as catalog:
        assert catalog.db.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
        done = catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0]
        assert catalog.db.execute("SELECT count(*) FROM faces WHERE id NOT IN (SELECT face_id FROM embeddings)").fetchone()[0] == 0
    assert 3 <= done < len(LIBRARY)
    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: FakeDetector())
    out = json.loads(run(env, "cluster", str(env["root"]), "--json").stdout)
    assert out["detect"]["skipped"] == done and out["detect"]["detected"] == len(LIBRARY) - done
    assert out["cluster"]["faces"] == N_FACES


def test_hdbscan_method(env: dict) -> None:
    result = run(env, "cluster", str(env["root"]), "--method", "hdbscan", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["cluster"]["mode"] == "full" and out["cluster"]["faces"] == N_FACES
    # Ten faces: at the default density (5 neighbours) HDBSCAN finds no dense group in so few;
    # --min-samples 1 finds the three people with three faces each, and the change re-clusters.
    assert out["cluster"]["clusters"] == 0
    result = run(env, "cluster", "--method", "hdbscan", "--min-samples", "1", "--json")
    out = json.loads(result.stdout)
    assert out["cluster"]["mode"] == "full" and "settings changed" in result.stderr
    assert out["cluster"]["clusters"] == 3 and out["cluster"]["noise"] == 1


def test_a_finished_rerun_never_loads_the_embedding_network(env: dict, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from facecluster import embed as embed_module
    from facecluster.embed import open_embedder
    from facecluster.models.inception_resnet_v1 import InceptionResnetV1

    torch.manual_seed(0)
    weights = tmp_path / "random-casia-webface.pt"
    torch.save(InceptionResnetV1().state_dict(), weights)
    monkeypatch.setattr(pipeline, "load_embedder", lambda w, m, d="cpu", c=None, p=None: open_embedder(w, m, d, c))
    first = json.loads(run(env, "cluster", str(env["root"]), "--weights", str(weights), "--json").stdout)
    assert first["detect"]["embedded"] == N_FACES

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was loaded on a run with nothing to embed")

    monkeypatch.setattr(embed_module, "build_embedder", refuse)
    again = run(env, "cluster", str(env["root"]), "--weights", str(weights), "--json")
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["detect"]["skipped"] == len(LIBRARY) and out["embed"]["embedded"] == 0
    assert out["cluster"]["faces"] == N_FACES


def test_a_damaged_model_file_is_a_one_line_error(env: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from facecluster.embed import open_embedder
    from facecluster.models.inception_resnet_v1 import InceptionResnetV1
    from facecluster.models.model_file import save_model_file

    torch.manual_seed(0)
    model = InceptionResnetV1(embedding_dim=16).eval()
    save_model_file(path := tmp_path / "me.pt", model, base="b", meta={})
    blob = bytearray(path.read_bytes())
    blob[blob.find(model.last_linear.weight.detach().numpy().tobytes()) + 3] ^= 0x40  # one weight times ~1e38
    path.write_bytes(bytes(blob))
    monkeypatch.setattr(pipeline, "load_embedder", lambda w, m, d="cpu", c=None, p=None: open_embedder(w, m, d, c))
    result = run(env, "cluster", str(env["root"]), "--model", str(path), "--json")
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"Error: {path} is damaged: its weights do not "
                                                                       "match the checksum written with them")
    with Catalog.open(env["db"]) as catalog:
        assert catalog.db.execute("SELECT status FROM runs").fetchall() == [("error",)]
        assert catalog.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0  # no vectors from it


@pytest.mark.parametrize(
    "args",
    [
        ["label", "99999999999999999999", "X"],
        ["label", "²", "X"],
        ["label", "0", "X"],
        ["label", "--move", "99999999999999999999", "X"],
        ["label", "--move", "٣", "X"],  # an Arabic-Indic digit: int() takes it, an id does not
        ["label", "--reject", "99999999999999999999"],
        ["label", "--ignore-face", "-1"],
        ["label", "--ignore-cluster", "9223372036854775808"],
        ["label", "--unignore-face", " 7"],
        ["label", "--unignore-cluster", "1e3"],
        ["faces", "--cluster", "99999999999999999999"],
        ["faces", "--cluster", "0"],
    ],
)
def test_ids_that_are_not_catalog_ids_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "catalog.db"), *args])
    assert result.exit_code == 2, result.output
    assert "is not an id" in result.stderr and "unexpected" not in result.stderr


def test_the_largest_id_is_accepted(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "catalog.db").close()  # label never creates a catalog
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "catalog.db"), "label", "--reject", str(2**63 - 1)])
    assert result.exit_code == 1 and "no face 9223372036854775807" in result.stderr


@pytest.mark.parametrize("fmt", [[], ["--csv"]])
def test_faces_of_an_unknown_cluster_is_an_error_like_an_unknown_person(tmp_path: Path, fmt: list[str]) -> None:
    Catalog.open(tmp_path / "catalog.db").close()  # faces never creates a catalog
    db = ["--db", str(tmp_path / "catalog.db")]
    for option, value in (("--cluster", "99"), ("--person", "Nobody")):
        result = CliRunner().invoke(cli, [*db, "faces", option, value, *fmt])
        assert result.exit_code == 1, (option, result.output)
        assert result.stdout == ""  # not even a CSV header
        assert result.stderr.startswith("Error: no ") and result.stderr.count("\n") == 1
    assert "no cluster 99" in CliRunner().invoke(cli, [*db, "faces", "--cluster", "99"]).stderr


def test_faces_json_is_the_explicit_default_and_excludes_csv(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    default = run(env, "faces")
    explicit = run(env, "faces", "--json")
    assert explicit.exit_code == 0 and explicit.stdout == default.stdout and len(jsonl(explicit.stdout)) == N_FACES
    both = run(env, "faces", "--json", "--csv")
    assert both.exit_code == 2 and both.stdout == "" and "--json" in both.stderr and "--csv" in both.stderr

@pytest.mark.parametrize("name", ["al", "1", "e", "true"])
def test_forget_keeps_the_run_history_readable(env: dict, name: str) -> None:
    """Names that occur inside JSON syntax ('al' in false, '1' in 1.0) once garbled the last cluster run."""
    run(env, "cluster", str(env["root"]))
    cluster = next(r for r in people_by_kind(env) if r["kind"] == "cluster")
    assert run(env, "label", str(cluster["id"]), name).exit_code == 0
    assert run(env, "forget", name, "--yes", "-q").exit_code == 0
    with Catalog.open(env["db"]) as catalog:
        for args, stats in catalog.db.execute("SELECT args, stats FROM runs"):
            json.loads(args), json.loads(stats)
        assert catalog.last_run_args("cluster")["full"] is False
    result = run(env, "cluster", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cluster"]["mode"] == "unchanged"


def test_relabelling_to_fix_a_typo_leaves_no_empty_person(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    cluster = next(r for r in people_by_kind(env) if r["kind"] == "cluster")
    run(env, "label", str(cluster["id"]), "Pete Sampas")
    result = run(env, "label", str(cluster["id"]), "Pete Sampras")
    assert result.exit_code == 0
    assert f"cluster {cluster['id']} is Pete Sampras (3 faces); Pete Sampas has no faces left and is removed" in (
        result.stderr
    )
    people = [r for r in people_by_kind(env) if r["kind"] == "person"]
    assert [(p["name"], p["faces"]) for p in people] == [("Pete Sampras", 3)]


def test_people_all_shows_a_named_ignored_cluster_to_unignore(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    cluster = next(r for r in people_by_kind(env) if r["kind"] == "cluster")["id"]
    run(env, "label", str(cluster), "Ada")
    run(env, "label", "--ignore-cluster", str(cluster))
    assert "Ada" not in run(env, "people").stdout
    lines = run(env, "people", "--all").stdout.splitlines()
    assert f"cluster  {cluster:>6} {3:>6}  Ada  (ignored)" in lines
    assert run(env, "label", "--unignore-cluster", str(cluster)).exit_code == 0
    assert [(r["name"], r["faces"], r["clusters"]) for r in people_by_kind(env) if r["kind"] == "person"] == [
        ("Ada", 3, [cluster])
    ]


def test_people_json_records_have_one_shape_with_or_without_all(env: dict) -> None:
    """`people --json | jq 'select(.ignored | not)'` works on every record, whether --all was given or not."""
    run(env, "cluster", str(env["root"]))
    first, second = [r["id"] for r in people_by_kind(env) if r["kind"] == "cluster"][:2]
    run(env, "label", str(first), "Ada")
    run(env, "label", str(second), "Bob")
    run(env, "label", "--ignore-cluster", str(second))
    plain = people_by_kind(env)
    everything = jsonl(run(env, "people", "--all", "--json").stdout)
    keys = ["kind", "id", "name", "faces", "clusters", "ignored"]
    assert {tuple(r) for r in plain + everything} == {tuple(keys)}
    assert [(r["kind"], r["name"], r["ignored"]) for r in everything if r["name"]] == [
        ("person", "Ada", False), ("person", "Bob", True), ("cluster", "Bob", True)]
    assert all(not r["ignored"] for r in plain)


def test_a_name_with_a_newline_or_nothing_visible_is_a_one_line_error(env: dict) -> None:
    run(env, "cluster", str(env["root"]))
    cluster = next(r for r in people_by_kind(env) if r["kind"] == "cluster")["id"]
    for bad, reason in (("Ada\nLovelace", "control characters ('\\n')"), ("\u200b", "needs a visible character")):
        result = run(env, "label", str(cluster), bad)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("Error: a person's name") and reason in result.stderr
    assert [r for r in people_by_kind(env) if r["kind"] == "person"] == []


@pytest.mark.parametrize("args", [["people"], ["faces"], ["label", "3", "Ada"], ["show", "--out", "{tmp}/site"],
                                  ["export", "--out", "{tmp}/out"], ["forget", "Ada", "--yes"],
                                  ["evaluate", "clusters", "--truth-from-folders"]])
def test_commands_that_read_or_name_never_create_a_catalog(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "nonexist" / "dir" / "new.db"  # a mistyped --db
    result = CliRunner().invoke(cli, ["--db", str(db), *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: no catalog at {db}: run facecluster cluster PHOTOS first\n"
    assert not (tmp_path / "nonexist").exists()


@pytest.mark.parametrize("option", ["--threshold", "--min-probability"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf"])
def test_cluster_refuses_a_float_that_is_not_finite(env: dict, option: str, value: str) -> None:
    run(env, "cluster", str(env["root"]))
    result = run(env, "cluster", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr
    with Catalog.open(env["db"]) as catalog:  # nothing ran: the clusters are intact, no run recorded
        assert catalog.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert catalog.db.execute("SELECT count(*) FROM clusters").fetchone()[0] == 3


def test_every_float_option_refuses_nan() -> None:
    """Click's FloatRange lets NaN through: every float option uses the shared finite type instead."""
    import click

    from facecluster.commands.common import FiniteFloatRange

    def commands(group: click.Group, ctx: click.Context, prefix: str = "") -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                found.update(commands(command, ctx, f"{prefix}{name} "))
            else:
                found[prefix + name] = command
        return found

    floats = {(name, p.name): p.type for name, c in commands(cli, click.Context(cli)).items() for p in c.params
              if isinstance(p.type, click.types.FloatParamType)}
    assert ("cluster", "threshold") in floats and ("train", "lr") in floats
    for (name, param), kind in floats.items():
        assert isinstance(kind, FiniteFloatRange), f"{name} --{param}"
        with pytest.raises(click.BadParameter, match="not a finite number"):
            kind.convert("nan", None, None)


@pytest.mark.parametrize("command", ["detect", "cluster"])
def test_an_unreadable_file_named_explicitly_is_a_recorded_failure(env: dict, command: str,
                                                                   enforced_permissions: None) -> None:
    locked = env["root"] / "2020" / "a1.png"
    locked.chmod(0o000)
    try:
        result = run(env, command, str(locked), str(env["root"] / "2021" / "c1.png"))
    finally:
        locked.chmod(0o644)
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert f"failed: {locked}: " in result.stderr and "Permission denied" in result.stderr
    with Catalog.open(env["db"]) as catalog:  # the other file was detected; the run is partial
        assert catalog.db.execute("SELECT count(*) FROM photos WHERE status = 'detected'").fetchone()[0] == 1
        assert catalog.db.execute("SELECT status FROM runs").fetchall() == [("partial",)]


@pytest.mark.parametrize("command", [["embed"], ["cluster"]])
def test_a_face_that_cannot_be_embedded_is_listed_and_the_run_is_partial(env: dict, command: list[str]) -> None:
    run(env, "detect", str(env["root"]))
    with Catalog.open(env["db"]) as catalog, catalog.transaction() as conn:
        conn.execute("UPDATE faces SET crop = ? WHERE id = 3", [b"not an image"])
    result = run(env, *command)  # no --json: the failure must still be shown
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "failed: face 3: stored crop unreadable: not a JPEG or PNG image (12 bytes)\n" in result.stderr
    assert "object at 0x" not in result.stderr
    with Catalog.open(env["db"]) as catalog:
        assert catalog.db.execute("SELECT command, status FROM runs ORDER BY id").fetchall()[-1] == (command[0], "partial")
        assert catalog.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == N_FACES - 1


def test_a_command_line_model_wins_over_weights_from_the_environment_or_settings(
        env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple] = []
    fake = pipeline.load_embedder

    def recording(weights, model_path, *args, **kwargs):
        seen.append((weights, model_path))
        return fake(weights, model_path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_embedder", recording)
    weights, model = tmp_path / "w.pt", tmp_path / "m.pt"
    monkeypatch.setenv("FACECLUSTER_WEIGHTS", str(weights))  # a default: --model on the command line wins
    assert run(env, "cluster", str(env["root"]), "--model", str(model), "-q").exit_code == 0
    settings = tmp_path / "config" / "facecluster" / "config.toml"
    settings.parent.mkdir(parents=True)
    settings.write_text(f'[embed]\nmodel = "{model}"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert run(env, "embed", "-q", "--force").exit_code == 0  # the variable over the settings file
    monkeypatch.delenv("FACECLUSTER_WEIGHTS")
    assert run(env, "embed", "-q", "--force", "--weights", str(weights)).exit_code == 0  # the flag over the file
    assert run(env, "embed", "-q", "--force").exit_code == 0  # the settings file alone
    assert seen == [(None, model), (weights, None), (weights, None), (None, model)]


def test_naming_a_cluster_of_one_face_says_one_face(env: dict) -> None:
    run(env, "cluster", str(env["root"]), "--min-cluster-size", "1", "-q")
    single = next(c for c in people_by_kind(env) if c["faces"] == 1)
    assert run(env, "label", str(single["id"]), "Dora").stderr == f"cluster {single['id']} is Dora (1 face)\n"


def test_commands_that_only_read_use_a_catalog_that_cannot_be_written(env: dict, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog on a read-only disk (a backup, another user's file): reading commands open it read-only
    (SQLite's ``mode=ro``, so any write would fail) and print what they print on a writable one."""
    from facecluster.errors import CatalogError

    run(env, "cluster", str(env["root"]))
    run(env, "label", "1", "Ada")
    reading = [["people", "--json"], ["faces"], ["evaluate", "clusters", "--truth-from-folders", "--json"]]
    writable = [run(env, *args).stdout for args in reading]

    refusal = f"the catalog {env['db']} is read-only: facecluster writes to it"
    opened: list[Catalog] = []
    real_read_only = Catalog._open_read_only.__func__  # type: ignore[attr-defined]

    def refused(cls: type[Catalog], path: object, *, create: bool) -> Catalog:
        raise CatalogError(refusal, write_refused=True)  # what a read-only file or folder gives, even to root

    def read_only(cls: type[Catalog], path: Path, refusal: CatalogError) -> Catalog:
        opened.append(real_read_only(cls, path, refusal))
        return opened[-1]

    monkeypatch.setattr(Catalog, "_open", classmethod(refused))
    monkeypatch.setattr(Catalog, "_open_read_only", classmethod(read_only))
    assert [run(env, *args).stdout for args in reading] == writable
    assert jsonl(writable[0])[0]["name"] == "Ada"
    for args in (["show", "--out", str(tmp_path / "site")], ["export", "--out", str(tmp_path / "out")]):
        assert run(env, *args, "-q").exit_code == 0, args
    assert (tmp_path / "site" / "index.html").exists() and any((tmp_path / "out").iterdir())
    assert len(opened) == 5 and all(catalog.read_only for catalog in opened)

    # Commands that write are refused as before, with the same one line.
    result = run(env, "label", "1", "Grace")
    assert result.exit_code == 1 and result.stderr == f"Error: {refusal}\n"


def test_checksum_from_the_command_line_or_the_settings_file(env: dict, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = env["root"]
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (1e9, 1e9))  # written long before the runs: size and mtime alone vouch for them
    run(env, "detect", str(root), "-q")
    photo = root / "2021" / "d1.png"
    before, data = photo.stat(), photo.read_bytes()
    make_photo(photo, [4])  # another person in the same place: the PNG has the same size
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert photo.stat().st_size == before.st_size and photo.read_bytes() != data
    out = json.loads(run(env, "detect", str(root), "--json").stdout)
    assert (out["detected"], out["checked"], out["checked_changed"]) == (0, 0, 0)
    result = run(env, "detect", str(root), "--json", "--checksum")
    out = json.loads(result.stdout)
    assert (out["detected"], out["skipped"], out["checked"], out["checked_changed"]) == (1, len(LIBRARY) - 1,
                                                                                         len(LIBRARY), 1)
    line = f"{len(LIBRARY)} files with the recorded size and mtime checked by content hash: 1 changed"
    assert line in result.stderr
    settings = tmp_path / "config" / "facecluster" / "config.toml"
    settings.parent.mkdir(parents=True)
    settings.write_text("[detect]\nchecksum = true\n[cluster]\nchecksum = true\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = json.loads(run(env, "detect", str(root), "--json").stdout)
    assert (out["checked"], out["checked_changed"]) == (len(LIBRARY), 0)
    assert json.loads(run(env, "detect", str(root), "--json", "--no-checksum").stdout)["checked"] == 0
    result = run(env, "cluster", str(root), "--json")
    assert json.loads(result.stdout)["detect"]["checked"] == len(LIBRARY)
    assert "unchanged checked by hash / changed" in result.stderr
