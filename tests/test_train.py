"""The trainer and ``facecluster train``: tiny synthetic faces, a random-weight network, fake detection."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.config import TrainConfig
from facecluster.errors import DataError, ImageError, ModelError
from facecluster.migrations import now
from facecluster.models.inception_resnet_v1 import InceptionResnetV1
from facecluster.models.model_file import load_model_file
from facecluster.training import data as data_module
from facecluster.training.data import DataReport, FaceSet, ValidationSet, load_catalog_dataset
from facecluster.training.trainer import BaseModel, TrainResult, build_model, train
from facecluster.weights import torch_load
from tests.fakes import FakeFace

SIZE = 80  # small crops keep the random-weight InceptionResnetV1 fast on two cores
COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (200, 40, 200)]


@pytest.fixture(scope="module")
def base_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return InceptionResnetV1().state_dict()


def _faces(n_ids: int = 4, per_id: int = 3, seed: int = 0) -> FaceSet:
    # Each identity is a colour; faces vary by noise. Learnable from any backbone features.
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_ids), per_id)
    base = np.array(COLOURS[:n_ids], np.float64)[labels][:, None, None, :]
    crops = np.clip(base + rng.normal(0, 25, (len(labels), SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    return FaceSet(crops, labels, [f"p{i}" for i in range(n_ids)], [f"{seed}-{i}" for i in range(len(labels))],
                   "test", DataReport())


def _val(faces: FaceSet) -> ValidationSet:
    n = len(faces.labels)
    first = np.arange(n)
    second = np.array([(i + 1) % n if faces.labels[(i + 1) % n] == faces.labels[i] else (i + 3) % n for i in range(n)])
    same = faces.labels[first] == faces.labels[second]
    return ValidationSet(faces.crops, faces.digests, first, second, same, np.arange(n) % 2, set(), "test")


def _config(**kw: object) -> TrainConfig:
    return replace(TrainConfig(), **{"identities_per_batch": 2, "faces_per_identity": 3, "epochs": 2, **kw})


def test_frozen_training_writes_model_run_folder_and_metrics(tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    result = train(faces, _config(freeze_backbone=True), base=BaseModel(base_state, "rand:00000000"),
                   out=tmp_path / "m.pt", run_dir=tmp_path / "run", val=_val(faces))
    model, meta = load_model_file(tmp_path / "m.pt")
    assert model.embedding_dim == 128 == result.dim and meta["base"] == "rand:00000000"
    # The backbone is the base's, untouched; only the new layer was trained.
    state = model.state_dict()
    assert torch.equal(state["conv2d_1a.conv.weight"], base_state["conv2d_1a.conv.weight"])
    run = tmp_path / "run"
    assert json.loads((run / "args.json").read_text())["config"]["freeze_backbone"] is True
    assert set(json.loads((run / "versions.json").read_text())) >= {"python", "torch", "facecluster"}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert lines[0]["pca_energy_kept"] <= 1.0 + 1e-6
    for line in lines[1:]:
        assert {"loss", "active_fraction", "faces_per_s", "val_accuracy", "val_at_far_1e-3"} <= set(line)
    assert result.baseline is not None and result.baseline["dim"] == 512
    assert (run / "checkpoint.pt").exists()


def test_pca_head_starts_as_projection_of_the_base_embedding(base_state: dict) -> None:
    from facecluster.training.trainer import backbone_features, head_embeddings, init_head_from_base

    faces = _faces()
    dev = torch.device("cpu")
    base = build_model(512, BaseModel(base_state, "b"), 0.2, dev)
    base.load_state_dict(base_state)
    new = build_model(512, BaseModel(base_state, "b"), 0.2, dev).eval()
    feats = backbone_features(base, torch.as_tensor(faces.crops[:6]), dev)
    kept = init_head_from_base(new, base_state, feats)
    with torch.no_grad():
        want = base.eval().last_bn(base.last_linear(feats))
        got = head_embeddings(new, feats)
    # With dim = 512 the projection is a rotation: pairwise distances are those of the base model.
    want = torch.nn.functional.normalize(want, dim=1)
    assert kept == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(torch.cdist(got, got), torch.cdist(want, want), atol=1e-3)


def test_loss_and_active_fraction_fall(tmp_path: Path, base_state: dict) -> None:
    # Six close colours under heavy noise: not separated at the start, learnable by the new layer.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    crops = rng.uniform(100, 156, (6, 3))[labels][:, None, None, :] + rng.normal(0, 60, (24, SIZE, SIZE, 3))
    faces = FaceSet(np.clip(crops, 0, 255).astype(np.uint8), labels, [str(i) for i in range(6)],
                    [f"fall-{i}" for i in range(24)], "test", DataReport())
    cfg = replace(TrainConfig(), identities_per_batch=6, faces_per_identity=4, epochs=10, freeze_backbone=True,
                  head_init="random", dropout=0.0)  # the paper's semi-hard miner and AdaGrad at 0.05
    result = train(faces, cfg, base=BaseModel(base_state, "b"), out=tmp_path / "m.pt", run_dir=tmp_path / "r")
    epochs = result.history[1:]
    assert epochs[-1]["loss"] < 0.5 * epochs[0]["loss"]
    assert epochs[-1]["active_fraction"] < 0.5 * epochs[0]["active_fraction"]


def test_resume_continues_exactly(tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    base = BaseModel(base_state, "b")
    straight = train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=tmp_path / "a.pt",
                     run_dir=tmp_path / "a")
    train(faces, _config(freeze_backbone=True, epochs=1), base=base, out=tmp_path / "b.pt", run_dir=tmp_path / "b")
    resumed = train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=tmp_path / "b.pt",
                    run_dir=tmp_path / "b", resume=True)
    assert [h["loss"] for h in resumed.history[1:]] == pytest.approx([h["loss"] for h in straight.history[1:]], abs=1e-6)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 4
    args = json.loads((tmp_path / "b" / "args.json").read_text())  # says what ran last, and that it was resumed
    assert args["config"]["epochs"] == 3
    assert args["resumed"] == [{"after_epoch": 1, "changed": {"epochs": [1, 3]}}]
    with pytest.raises(ModelError, match="no checkpoint"):
        train(faces, _config(), base=base, out=tmp_path / "c.pt", run_dir=tmp_path / "c", resume=True)


def test_full_fine_tuning_step_changes_the_backbone(tmp_path: Path, base_state: dict) -> None:
    faces = _faces(n_ids=2, per_id=2)
    cfg = replace(TrainConfig(), identities_per_batch=2, faces_per_identity=2, epochs=1, optimizer="adam",
                  lr=1e-3, head_init="random", miner="batch-hard")
    result = train(faces, cfg, base=BaseModel(base_state, "b"), out=tmp_path / "m.pt", run_dir=tmp_path / "r")
    model, _ = load_model_file(tmp_path / "m.pt")
    assert result.steps == 1
    assert not torch.equal(model.state_dict()["conv2d_1a.conv.weight"], base_state["conv2d_1a.conv.weight"])
    # BatchNorm statistics of the pretrained backbone are kept (frozen), not re-estimated on 4 faces.
    assert torch.equal(model.state_dict()["conv2d_1a.bn.running_mean"], base_state["conv2d_1a.bn.running_mean"])


def test_wrong_shape_weights_and_devices_are_one_line_errors(tmp_path: Path, base_state: dict) -> None:
    bad = dict(base_state)
    bad["conv2d_1a.conv.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ModelError, match="do not fit InceptionResnetV1: conv2d_1a.conv.weight has shape"):
        build_model(128, BaseModel(bad, "bad.pt"), 0.2, torch.device("cpu"))
    with pytest.raises(ModelError, match="missing"):
        build_model(128, BaseModel({"a": torch.zeros(1)}, "bad.pt"), 0.2, torch.device("cpu"))
    faces = _faces()
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            train(faces, _config(), base=BaseModel(None, "s"), out=tmp_path / "m.pt", run_dir=tmp_path / "r",
                  device="cuda")
        with pytest.raises(ModelError, match="CUDA"):
            train(faces, _config(amp=True), base=BaseModel(None, "s"), out=tmp_path / "m.pt", run_dir=tmp_path / "r")
    with pytest.raises(ModelError, match="freeze-backbone needs pretrained"):
        train(faces, _config(freeze_backbone=True, head_init="random"), base=BaseModel(None, "s"),
              out=tmp_path / "m.pt", run_dir=tmp_path / "r")


def test_catalog_dataset_uses_named_faces(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "c.db") as catalog:
        db = catalog.db
        db["photos"].insert({"id": 1, "hash": "h", "path": "p.jpg", "size": 1, "mtime": 0.0, "added_at": now(),
                             "updated_at": now()})
        for pid, name in ((1, "Ada"), (2, "Bob"), (3, "Cy")):
            db["people"].insert({"id": pid, "name": name, "created_at": now()})
        faces = _faces(n_ids=3, per_id=2)
        for i, (crop, label) in enumerate(zip(faces.crops, faces.labels)):
            person = int(label) + 1 if not (label == 2 and i % 2) else None  # Cy keeps only one named face
            db["faces"].insert({"photo_id": 1, "x1": 0, "y1": 0, "x2": 1, "y2": 1, "probability": 1.0,
                                "crop": data_module._encode_png(crop), "crop_format": "png", "person_id": person,
                                "created_at": now()})
        got = load_catalog_dataset(catalog)
    assert got.names == ["Ada", "Bob"] and got.report.left_out_identities == ["Cy"]
    assert got.crops.shape == (4, 160, 160, 3)  # resized to the embedding crop size
    with Catalog.open(None) as empty, pytest.raises(DataError, match="no faces of named people"):
        load_catalog_dataset(empty)


# -- the command, with a fake reader and detector -------------------------------------------------------


class _CentreDetector:
    """One face in the middle of every photo (except all-black ones: no face)."""

    def detect(self, images: list[np.ndarray]) -> list[list[FakeFace]]:
        out = []
        for img in images:
            h, w = img.shape[:2]
            found = img.max() > 0
            out.append([FakeFace((w * 0.25, h * 0.25, w * 0.75, h * 0.75), ((0.0, 0.0),) * 5, 0.99)] if found else [])
        return out


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise ImageError(f"cannot decode {path.name}") from exc


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    import facecluster.commands.train as train_command

    monkeypatch.setattr(train_command, "_read_rgb", _read)
    monkeypatch.setattr(train_command, "_detector_factory", lambda device, progress: _CentreDetector)
    monkeypatch.setattr(data_module, "crop_settings", lambda: (SIZE, 8, False))


def _library(root: Path, n_ids: int = 3, per_id: int = 3) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n_ids):
        person = root / f"Person_{i}"
        person.mkdir(parents=True)
        for j in range(per_id):
            pixels = np.clip(np.array(COLOURS[i]) + rng.normal(0, 20, (48, 48, 3)), 1, 255).astype(np.uint8)
            Image.fromarray(pixels).save(person / f"Person_{i}_{j + 1:04d}.jpg")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory, base_state: dict) -> Path:
    path = tmp_path_factory.mktemp("w") / "base.pt"
    torch.save(base_state, path)
    return path


def test_cli_trains_and_reports_json(tmp_path: Path, fake_pipeline: None, weights_file: Path) -> None:
    lib = _library(tmp_path / "lib", n_ids=4)
    (lib / "Person_1" / "broken.jpg").write_text("not an image")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(lib / "Person_3" / "black.jpg")  # no face
    (lib / "Loner").mkdir()
    Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(lib / "Loner" / "Loner_0001.jpg")
    # Validation pairs on Person_2 (kept out of training) and Person_0.
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nPerson_2\t1\t2\nPerson_2\t1\tPerson_0\t1\nPerson_2\t2\t3\nPerson_2\t3\tPerson_0\t2\n")
    out = tmp_path / "m.pt"
    args = ["train", "--data", str(lib), "--weights", str(weights_file), "--dim", "32", "--freeze-backbone",
            "--epochs", "2", "-P", "2", "-K", "2", "--out", str(out), "--run-dir", str(tmp_path / "run"),
            "--val-pairs", str(pairs), "--val-images", str(lib), "--json", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dim"] == 32 and summary["epochs"] == 2 and out.exists()
    assert summary["data"]["unreadable"] == 1 and summary["data"]["no_face"] == 1
    assert summary["data"]["left_out_identities"] == 1  # Loner: one face
    assert summary["skipped_identities"] == 1  # the same identity, counted where training reports it
    assert summary["data"]["excluded_identities"] == 2  # Person_0 and Person_2 are in the pairs
    assert summary["identities"] == 2 and summary["faces"] == 6  # Person_1 and Person_3, 3 faces each
    assert summary["validation"] == {"pairs": 4, "skipped": 0, "no_face": 0}
    model, meta = load_model_file(out)
    assert model.embedding_dim == 32 and meta["freeze_backbone"] is True


def test_cli_bad_input_is_one_line(tmp_path: Path, fake_pipeline: None, weights_file: Path) -> None:
    runner = CliRunner()
    base = ["train", "--weights", str(weights_file), "--out", str(tmp_path / "m.pt"), "-q"]
    (empty := tmp_path / "empty").mkdir()
    cases = {
        "no images found": ["--data", str(empty)],
        "need at least 2 identities": ["--data", str(_library(tmp_path / "one", n_ids=1))],
    }
    lib = _library(tmp_path / "lib")
    cases["CUDA"] = ["--data", str(lib), "--device", "cuda"]
    bad = tmp_path / "bad.pt"
    torch.save({"conv2d_1a.conv.weight": torch.zeros(1)}, bad)
    cases["not an InceptionResnetV1 state dict"] = ["--data", str(lib), "--weights", str(bad)]
    for message, extra in cases.items():
        if message == "CUDA" and torch.cuda.is_available():
            continue
        result = runner.invoke(cli, base + extra)
        assert result.exit_code == 1, (message, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = runner.invoke(cli, ["train", "--out", "x.pt"])
    assert result.exit_code == 2 and "--data DIR or --from-catalog" in result.stderr


class _CountingFeatures:
    """A stand-in backbone: features are a function of the crop's pixels; counts the crops it sees."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.seen = 0
        self.fail_after = fail_after

    def __call__(self, crops: torch.Tensor, flip: bool) -> torch.Tensor:
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt  # the user stops the run part way
        self.seen += len(crops)
        x = torch.flip(crops, dims=[2]) if flip else crops
        return x.float().mean(dim=(1, 2)).repeat(1, 1792 // 3 + 1)[:, :1792]


def test_feature_cache_writes_each_chunk_once_and_survives_interruption() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    digests = [f"d{i}" for i in range(10)]
    folder = data_module.cache_dir() / "train-features" / "m-k"
    expected = _CountingFeatures()(torch.as_tensor(crops), False)

    def run(fn: _CountingFeatures, n: int = 10, flips: bool = False) -> torch.Tensor:
        return data_module._feature_cache(digests[:n], crops[:n], fn, "m", "k", flips, "features", chunk=3)

    first = _CountingFeatures(fail_after=6)  # two chunks of 3 done, then interrupted
    with pytest.raises(KeyboardInterrupt):
        run(first)
    chunks = sorted(folder.glob("*.pt"))
    assert len(chunks) == 2  # one file per chunk; earlier chunks are never rewritten
    second = _CountingFeatures()
    out = run(second)
    assert second.seen == 4 and torch.equal(out[:, 0], expected)  # only the 4 missing crops computed
    assert len(list(folder.glob("*.pt"))) == 1 and not set(chunks) & set(folder.glob("*.pt"))  # compacted
    third = _CountingFeatures()
    assert torch.equal(run(third, flips=True)[:, 0], expected) and third.seen == 10  # mirrors only
    # A damaged file is a cache miss: dropped and computed again, never an error.
    for path in folder.glob("*.pt"):
        path.write_bytes(b"not a torch file")
    fourth = _CountingFeatures()
    assert torch.equal(run(fourth, n=5)[:, 0], expected[:5]) and fourth.seen == 5
    assert data_module._feature_cache([], crops[:0], fourth, "m", "k", True, "f").shape == (0, 2, 1792)


# -- validation identities held out, errors before detection, interrupt hint ------------------------------------


def _named_catalog(path: Path, names: list[str], per_person: int = 2) -> Path:
    """A catalog whose people ``names`` have ``per_person`` faces with stored crops each."""
    with Catalog.open(path) as catalog:
        db = catalog.db
        db["photos"].insert({"id": 1, "hash": "h", "path": "p.jpg", "size": 1, "mtime": 0.0, "added_at": now(),
                             "updated_at": now()})
        faces = _faces(n_ids=len(names), per_id=per_person)
        for pid, name in enumerate(names, 1):
            db["people"].insert({"id": pid, "name": name, "created_at": now()})
        for crop, label in zip(faces.crops, faces.labels):
            db["faces"].insert({"photo_id": 1, "x1": 0, "y1": 0, "x2": 1, "y2": 1, "probability": 1.0,
                                "crop": data_module._encode_png(crop), "crop_format": "png",
                                "person_id": int(label) + 1, "created_at": now()})
    return path


def test_catalog_dataset_holds_out_validation_identities_by_name(tmp_path: Path) -> None:
    # Catalog names are typed by people ("john howard"); pairs use LFW folder names ("John_Howard").
    db = _named_catalog(tmp_path / "c.db", ["john  howard", "Carlos Moya", "Ada", "Bob"])
    with Catalog.open(db) as catalog:
        got = load_catalog_dataset(catalog, exclude={"John_Howard", "Carlos_Moya", "Jiang_Zemin"})
        assert got.names == ["Ada", "Bob"] and got.report.excluded_identities == 2
        with pytest.raises(DataError, match="all 4 identities named in the catalog .* held out for validation"):
            load_catalog_dataset(catalog, exclude={"John_Howard", "Carlos_Moya", "ada", "BOB"})


def test_folder_dataset_whose_identities_are_all_held_out_says_so(tmp_path: Path, fake_pipeline: None) -> None:
    lib = _library(tmp_path / "lib", n_ids=2)
    with pytest.raises(DataError, match="all 2 identities of .* held out for validation"):
        data_module.load_folder_dataset(lib, lambda: _CentreDetector(), _read, exclude={"Person_0", "person 1"})


def _pairs_over(path: Path, names: list[str]) -> Path:
    a, b = names[:2]
    path.write_text(f"2\t1\n{a}\t1\t2\n{a}\t1\t{b}\t1\n{b}\t1\t2\n{b}\t2\t{a}\t2\n")
    return path


def test_cli_from_catalog_keeps_validation_identities_out(tmp_path: Path, fake_pipeline: None,
                                                          weights_file: Path) -> None:
    # The leak: every named person of the catalog is a validation identity, so nothing may be trained on.
    lfw = _library(tmp_path / "lfw", n_ids=2)
    db = _named_catalog(tmp_path / "c.db", ["Person 0", "person_1"])
    args = ["--db", str(db), "train", "--from-catalog", "--weights", str(weights_file), "--out", str(tmp_path / "m"),
            "--val-pairs", str(_pairs_over(tmp_path / "pairs.txt", ["Person_0", "Person_1"])), "--val-images",
            str(lfw), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "all 2 identities named in the catalog" in result.stderr, result.output


_DONE = TrainResult("m.pt", "ab", "run", 1, 1, 32, "b", "semi-hard", 2, 6, 0, 1.0, 6.0)  # what a fake train returns


@pytest.fixture
def no_detection(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any attempt to detect or load training data: the errors below must come before that."""
    import facecluster.commands.train as train_command

    calls: list[str] = []
    monkeypatch.setattr(train_command, "_detector_factory", lambda device, progress: calls.append("detector"))
    monkeypatch.setattr(data_module, "load_folder_dataset", lambda *a, **k: calls.append("data"))
    monkeypatch.setattr(data_module, "load_validation_pairs", lambda *a, **k: calls.append("val"))
    return calls


def test_cli_option_and_weights_errors_come_before_detection(tmp_path: Path, no_detection: list[str],
                                                             weights_file: Path) -> None:
    lib = _library(tmp_path / "lib", n_ids=2)
    base = ["train", "--data", str(lib), "--out", str(tmp_path / "m.pt"), "-q"]
    w = ["--weights", str(weights_file)]
    usage = {  # exit 2: the options themselves
        "-P 0": w + ["-P", "0"], "-P 1": w + ["-P", "1"], "-P -2": w + ["-P", "-2"], "-K 1": w + ["-K", "1"],
        "-K -3": w + ["-K", "-3"], "seed": w + ["--seed", "99999999999999999999"],
        "scratch+freeze": ["--scratch", "--freeze-backbone"], "scratch+weights": w + ["--scratch"],
    }
    errors = {  # exit 1: what the options point at
        "does not exist": ["--weights", str(tmp_path / "typo.pt")],
        "FACECLUSTER_OFFLINE": [],  # the default vggface2, not in the (empty) cache, offline
        "larger than the base embedding (512)": w + ["--dim", "600"],
        "no checkpoint.pt": w + ["--resume", "--run-dir", str(tmp_path / "run")],
        "already holds the checkpoint of an earlier run": w + ["--run-dir", str(tmp_path / "old")],
        "damaged.pt is damaged: its weights do not match the checksum": ["--weights", str(tmp_path / "damaged.pt")],
    }
    # A trained model to continue from, whose weights no longer match the checksum written with them.
    torch.save({"format": "facecluster-model", "version": 1, "dim": 16, "base": "b", "meta": {},
                "state_dict": {"last_linear.weight": torch.zeros(16, 1792)}, "state_sha256": "0" * 64},
               tmp_path / "damaged.pt")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(b"an earlier run")
    if not torch.cuda.is_available():
        errors["CUDA"] = w + ["--amp"]
        errors["torch.compile"] = w + ["--compile"]
    runner = CliRunner()
    for what, extra in usage.items():
        result = runner.invoke(cli, base + extra)
        assert result.exit_code == 2, (what, result.output)
    for message, extra in errors.items():
        result = runner.invoke(cli, base + extra)
        assert result.exit_code == 1 and message in result.stderr, (message, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert no_detection == []
    assert not (tmp_path / "run").exists()  # a refused --resume leaves no empty run folder behind


def test_cli_resume_checks_that_need_no_photos_come_before_detection(
        tmp_path: Path, no_detection: list[str], weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # They ran inside train(), after detecting the whole --data folder (minutes): only the faces need it.
    from facecluster.commands.train import _base_model
    from facecluster.reporting import null_progress
    from facecluster.training import trainer

    run = tmp_path / "run"
    base = _base_model(weights_file, False, null_progress)  # named as the command names these weights
    train(_faces(), _config(freeze_backbone=True, dim=32), base=base, out=tmp_path / "m.pt", run_dir=run)
    (junk := tmp_path / "junk").mkdir()
    (junk / "checkpoint.pt").write_bytes(b"an earlier run")
    # No --lr, as in the run: both use the default step size, which the check resolves first.
    same = ["train", "--data", str(_library(tmp_path / "lib", n_ids=2)), "--weights", str(weights_file),
            "--out", str(tmp_path / "m.pt"), "--freeze-backbone", "--dim", "32", "-P", "2", "-K", "3", "--epochs",
            "2", "--resume", "--run-dir", str(run), "-q"]
    cases = {
        "used --optimizer adagrad (now adam), --seed 0 (now 7)": ["--optimizer", "adam", "--seed", "7"],
        "the checkpoint in {run} is 32-d, --dim is 16": ["--dim", "16"],
        "already trained 2 epochs and --epochs 1 is fewer": ["--epochs", "1"],
        f"checkpoint {junk / 'checkpoint.pt'} is unreadable": ["--run-dir", str(junk)],
    }
    for message, extra in cases.items():
        result = CliRunner().invoke(cli, [*same, *extra])
        assert result.exit_code == 1 and message.format(run=run) in result.stderr, (message, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert no_detection == []
    # The same options pass these checks and go on to detection (the faces are compared by train()).
    monkeypatch.setattr(trainer, "train", lambda *a, **k: _DONE)
    result = CliRunner().invoke(cli, same)
    assert result.exit_code == 0, result.output
    assert no_detection == ["detector", "data"]


def test_cli_scratch_ignores_weights_from_the_environment(tmp_path: Path, fake_pipeline: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.training import trainer

    seen: list[object] = []
    monkeypatch.setattr(trainer, "train", lambda *a, base, **k: seen.append(base) or _DONE)
    monkeypatch.setenv("FACECLUSTER_WEIGHTS", str(tmp_path / "somewhere.pt"))  # a default, not a --weights
    lib = _library(tmp_path / "lib")
    result = CliRunner().invoke(cli, ["train", "--data", str(lib), "--scratch", "--out", str(tmp_path / "m"), "-q"])
    assert result.exit_code == 0, result.output
    assert [b.name for b in seen] == ["scratch"]  # type: ignore[attr-defined]


def test_weights_name_is_resolved_as_embed_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                base_state: dict) -> None:
    from facecluster.commands.train import _base_model
    from facecluster.reporting import null_progress

    (tmp_path / "w").mkdir()
    torch.save(base_state, tmp_path / "w" / "facenet-casia-webface.pt")
    monkeypatch.setenv("FACECLUSTER_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.chdir(tmp_path)  # no file called casia-webface here: the name is a name
    base = _base_model(Path("casia-webface"), False, null_progress)
    assert base.state_dict is not None and torch.equal(base.state_dict["last_linear.weight"],
                                                       base_state["last_linear.weight"])


def test_interrupted_training_says_how_to_continue(tmp_path: Path, fake_pipeline: None, weights_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.training import trainer

    def interrupted(data: FaceSet, config: TrainConfig, *, run_dir: Path, **kw: object) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config.epochs > 1:
            (run_dir / "checkpoint.pt").write_bytes(b"epoch 1")  # one epoch finished before Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    lib = _library(tmp_path / "lib")
    run = tmp_path / "run"
    args = ["train", "--data", str(lib), "--weights", str(weights_file), "--out", str(tmp_path / "m.pt"),
            "--run-dir", str(run), "-q"]
    result = CliRunner().invoke(cli, [*args, "--epochs", "2"])
    assert result.exit_code == 130
    assert f"--resume --run-dir {run}" in result.stderr and "catalog" not in result.stderr, result.stderr
    result = CliRunner().invoke(cli, [*args, "--epochs", "1", "--run-dir", str(tmp_path / "fresh")])
    assert result.exit_code == 130 and "nothing to resume" in result.stderr, result.stderr


def test_messages_count_in_the_singular(tmp_path: Path, fake_pipeline: None, weights_file: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.training import trainer
    from facecluster.training.data import summary

    report = DataReport(identities=2, faces=5, left_out_identities=["x"], unreadable=["a.jpg: bad"], no_face=1,
                        excluded_identities=1)
    line = summary(replace(_faces(2, 2), report=report), None)
    assert line == ("2 identities, 5 faces (1 identity with < 2 faces left out, 1 unreadable image skipped, "
                    "1 photo without a face); 1 identity of the validation pairs kept out of training")
    monkeypatch.setattr(trainer, "train", lambda *a, **k: _DONE)
    result = CliRunner().invoke(cli, ["train", "--data", str(_library(tmp_path / "lib")), "--weights",
                                      str(weights_file), "--out", "m.pt", "--epochs", "1"])
    assert result.exit_code == 0 and "(32-d, 1 epoch)" in result.stderr, result.output


def test_unreadable_examples_name_the_file_once(tmp_path: Path) -> None:
    def truncated(path: Path) -> np.ndarray:
        raise ImageError("truncated or corrupt image data", path.name)

    (photo := tmp_path / "trunc.jpg").write_bytes(b"\xff\xd8 half a jpeg")
    report = DataReport()
    data_module.CropCache(lambda: _CentreDetector(), truncated, root=tmp_path / "c").crops([photo], report, False)
    assert report.unreadable == [f"{photo}: truncated or corrupt image data"]


# -- divergence, run folders, resuming ------------------------------------------------------------------


def test_a_diverging_run_stops_with_one_line_and_writes_no_model(tmp_path: Path, base_state: dict) -> None:
    from facecluster.models.model_file import non_finite_tensors
    from facecluster.weights import torch_load

    faces = _faces(n_ids=2, per_id=2)
    base = BaseModel(base_state, "b")
    tiny = {"identities_per_batch": 2, "faces_per_identity": 2, "head_init": "random", "miner": "batch-hard"}
    # A huge step: epoch 1's update is finite but absurd, epoch 2's forward pass overflows to NaN.
    with pytest.raises(ModelError, match=r"^training diverged at epoch 2, step 1 of 1: the embeddings and loss became "
                                         r"NaN .*no model written; checkpoint.pt keeps epoch 1; try a lower --lr or "
                                         r"--freeze-backbone$") as info:
        train(faces, _config(lr=1e10, **tiny), base=base, out=tmp_path / "m.pt", run_dir=tmp_path / "r")
    assert "\n" not in str(info.value) and not (tmp_path / "m.pt").exists()
    ckpt = torch_load(tmp_path / "r" / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and not non_finite_tensors(ckpt["model"])
    assert "NaN" not in (tmp_path / "r" / "metrics.jsonl").read_text()
    # An infinite step makes the weights themselves non-finite: caught right after the update.
    with pytest.raises(ModelError, match=r"^training diverged at epoch 1, step 1 of 1: the update made weights NaN"):
        train(faces, _config(lr=float("inf"), freeze_backbone=True, **tiny), base=base, out=tmp_path / "m.pt",
              run_dir=tmp_path / "r2")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "r2" / "checkpoint.pt").exists()


def test_batchnorm_statistics_gone_non_finite_stop_the_run_at_the_end_of_the_epoch(
        tmp_path: Path, base_state: dict) -> None:
    # The new layer's BatchNorm normalises with batch statistics while training, so NaN running statistics
    # leave the loss and every weight finite: only the end-of-epoch check of all tensors (buffers too) sees
    # them. A global forward hook spoils them right after each training-mode forward pass.
    def spoil(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, torch.nn.BatchNorm1d) and module.training:
            module.running_mean = torch.full_like(module.running_mean, float("nan"))  # a new tensor: autograd saved the old

    tiny = {"identities_per_batch": 2, "faces_per_identity": 2, "head_init": "random", "miner": "batch-hard"}
    handle = torch.nn.modules.module.register_module_forward_hook(spoil)
    try:
        with pytest.raises(ModelError, match=r"^training diverged at the end of epoch 1: 1 tensors became NaN or "
                                             r"infinite \(first: last_bn.running_mean\) .*no model written"):
            train(_faces(n_ids=2, per_id=2), _config(**tiny), base=BaseModel(base_state, "b"), out=tmp_path / "m.pt",
                  run_dir=tmp_path / "r")
    finally:
        handle.remove()
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "r" / "checkpoint.pt").exists()


def test_default_lr_is_lower_when_the_pretrained_backbone_trains(tmp_path: Path, base_state: dict) -> None:
    defaults = TrainConfig()
    assert defaults.resolved_lr(False) == 0.05 and defaults.resolved_lr(True) == defaults.fine_tune_lr == 1e-4
    assert replace(defaults, lr=0.01).resolved_lr(True) == 0.01
    cfg = replace(TrainConfig(), identities_per_batch=2, faces_per_identity=2, epochs=1, head_init="random",
                  miner="batch-hard")
    train(_faces(n_ids=2, per_id=2), cfg, base=BaseModel(base_state, "b"), out=tmp_path / "m.pt",
          run_dir=tmp_path / "r")
    _, meta = load_model_file(tmp_path / "m.pt")
    assert meta["lr"] == 1e-4  # the step size used is recorded, not "default"
    assert json.loads((tmp_path / "r" / "args.json").read_text())["config"]["lr"] == 1e-4


def _mode(path: Path) -> int:
    import stat

    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoint_is_private_and_a_new_run_never_reuses_its_folder(tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    base = BaseModel(base_state, "b")
    train(faces, _config(freeze_backbone=True, epochs=1), base=base, out=tmp_path / "a.pt", run_dir=tmp_path / "r")
    assert _mode(tmp_path / "r" / "checkpoint.pt") == 0o600 == _mode(tmp_path / "a.pt")
    assert _mode(tmp_path / "r") == 0o700  # args.json and metrics.jsonl are private too
    assert not list((tmp_path / "r").glob("*.tmp")) and not list((tmp_path / "r").glob(".*"))
    args_before = (tmp_path / "r" / "args.json").read_text()
    with pytest.raises(ModelError, match=r"already holds the checkpoint of an earlier run: continue it with --resume, "
                                         r"or give another --run-dir$"):
        train(faces, _config(freeze_backbone=True, seed=5), base=base, out=tmp_path / "b.pt", run_dir=tmp_path / "r")
    assert (tmp_path / "r" / "args.json").read_text() == args_before and not (tmp_path / "b.pt").exists()


def test_resume_refuses_options_that_differ_and_fewer_epochs(tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    base = BaseModel(base_state, "b")
    run = tmp_path / "r"
    train(faces, _config(freeze_backbone=True, epochs=2, optimizer="adam", lr=1e-3), base=base, out=tmp_path / "a.pt",
          run_dir=run)
    same = {"freeze_backbone": True, "optimizer": "adam", "lr": 1e-3}

    def resume(faces: FaceSet = faces, base: BaseModel = base, **kw: object) -> str:
        with pytest.raises(ModelError) as info:
            train(faces, _config(**{**same, **kw}), base=base, out=tmp_path / "x.pt", run_dir=run, resume=True)
        assert "\n" not in str(info.value) and not (tmp_path / "x.pt").exists()
        return str(info.value)

    # Each of these used to load the checkpoint anyway: a 30 KB missing-keys RuntimeError, a KeyError, or a mix.
    assert "--freeze-backbone on (now off)" in resume(freeze_backbone=False)
    assert "--optimizer adam (now adagrad)" in resume(optimizer="adagrad")
    message = resume(identities_per_batch=3, faces_per_identity=2, seed=1, miner="batch-hard")
    assert message.startswith(f"cannot resume: the run in {run} used ")
    for part in ("-P/--batch-identities 2 (now 3)", "-K/--batch-faces 3 (now 2)", "--seed 0 (now 1)",
                 "--miner semi-hard (now batch-hard)"):
        assert part in message
    assert "--optimizer" not in message and message.endswith("or start a new run in another --run-dir")
    assert "--weights b (now other)" in resume(base=BaseModel(base_state, "other"))
    assert "the training faces" in resume(faces=_faces(seed=1))
    assert "-d, --dim is 64" in resume(dim=64)  # the existing check, unchanged
    assert "already trained 2 epochs and --epochs 1 is fewer" in resume(epochs=1)
    # All but the faces are checked without them, by check_options (which the CLI calls before detection).
    from facecluster.training.trainer import check_options

    with pytest.raises(ModelError, match=r"--optimizer adam \(now adagrad\)"):
        check_options(_config(**{**same, "optimizer": "adagrad"}), base, "cpu", run, True)
    assert check_options(_config(**same), base, "cpu", run, True) == torch.device("cpu")
    # Options that may change: --epochs (train longer); the same total simply rewrites the model.
    result = train(faces, _config(**{**same, "epochs": 3}), base=base, out=tmp_path / "c.pt", run_dir=run, resume=True)
    assert result.epochs == 3 and [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    _, meta = load_model_file(tmp_path / "c.pt")
    assert meta["epochs"] == 3 and len(meta["history"]) == 4


def test_skipped_identities_counts_those_left_out_before_and_by_the_sampler(tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    lone = FaceSet(np.concatenate([faces.crops, faces.crops[:1]]), np.append(faces.labels, 4), faces.names + ["p4"],
                   faces.digests + ["lone"], "test", DataReport(left_out_identities=["Loner"]))
    result = train(lone, _config(freeze_backbone=True, epochs=1), base=BaseModel(base_state, "b"),
                   out=tmp_path / "m.pt", run_dir=tmp_path / "r")
    assert result.skipped_identities == 2 and result.identities == 4  # "Loner" (data) + "p4" (one face)


def test_cli_scratch_ignores_weights_from_the_settings_file(tmp_path: Path, fake_pipeline: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.training import trainer

    seen: list[object] = []
    monkeypatch.setattr(trainer, "train", lambda *a, base, **k: seen.append(base) or _DONE)
    settings = tmp_path / "mine.toml"
    settings.write_text(f'[train]\nweights = "{tmp_path / "somewhere.pt"}"\n')  # a default, not a --weights
    monkeypatch.setenv("FACECLUSTER_CONFIG", str(settings))
    lib = _library(tmp_path / "lib")
    result = CliRunner().invoke(cli, ["train", "--data", str(lib), "--scratch", "--out", str(tmp_path / "m"), "-q"])
    assert result.exit_code == 0, result.output
    assert [b.name for b in seen] == ["scratch"]  # type: ignore[attr-defined]


def test_resume_after_ctrl_c_while_the_checkpoint_is_written_logs_each_epoch_once(
        tmp_path: Path, base_state: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.training import trainer

    faces = _faces()
    base = BaseModel(base_state, "b")
    real_save = trainer.save_private

    def interrupted_at_epoch_2(payload: dict, path: Path) -> None:
        if payload["epoch"] == 2:
            raise KeyboardInterrupt  # metrics.jsonl already has epoch 2; checkpoint.pt keeps epoch 1
        real_save(payload, path)

    monkeypatch.setattr(trainer, "save_private", interrupted_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=tmp_path / "m.pt", run_dir=tmp_path / "r")
    monkeypatch.setattr(trainer, "save_private", real_save)
    result = train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=tmp_path / "m.pt",
                   run_dir=tmp_path / "r", resume=True)
    lines = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3] == [h["epoch"] for h in result.history]


def test_cli_out_or_run_dir_that_cannot_be_written_is_refused_before_detection(
        tmp_path: Path, no_detection: list[str], weights_file: Path) -> None:
    lib = _library(tmp_path / "lib", n_ids=2)
    (tmp_path / "a-file").write_text("not a folder")  # refuses a child even to root, unlike chmod
    base = ["train", "--data", str(lib), "--weights", str(weights_file), "-q"]
    cases = {
        f"cannot write --out {tmp_path / 'a-file' / 'm.pt'}": ["--out", str(tmp_path / "a-file" / "m.pt")],
        f"cannot write --run-dir {tmp_path / 'a-file' / 'run'}": ["--out", str(tmp_path / "m.pt"),
                                                                  "--run-dir", str(tmp_path / "a-file" / "run")],
    }
    for message, extra in cases.items():
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert no_detection == []


def test_cli_existing_out_is_refused_before_detection_unless_force(
        tmp_path: Path, no_detection: list[str], weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `train --out me.pt` replaced an earlier me.pt without a word: hours of training, and the model that a
    # catalog's vectors name.
    from facecluster.training import trainer

    lib = _library(tmp_path / "lib", n_ids=2)
    (out := tmp_path / "me.pt").write_bytes(b"an earlier model")
    args = ["train", "--data", str(lib), "--weights", str(weights_file), "--out", str(out), "--run-dir",
            str(tmp_path / "run"), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: --out {out} exists: give --force to replace it, or another --out\n"
    assert no_detection == [] and out.read_bytes() == b"an earlier model" and not (tmp_path / "run").exists()
    # --force goes on to detection and passes the permission to the library.
    seen: list[object] = []
    monkeypatch.setattr(trainer, "train", lambda *a, overwrite, **k: seen.append(overwrite) or _DONE)
    result = CliRunner().invoke(cli, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert seen == [True] and no_detection == ["detector", "data"]


def test_train_refuses_an_existing_out_unless_overwrite_or_resume(tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    base = BaseModel(base_state, "b")
    (out := tmp_path / "m.pt").write_bytes(b"an earlier model")
    with pytest.raises(ModelError, match=r"^--out .*m.pt exists: give --force to replace it, or another --out$"):
        train(faces, _config(freeze_backbone=True, epochs=1), base=base, out=out, run_dir=tmp_path / "r")
    assert out.read_bytes() == b"an earlier model" and not (tmp_path / "r").exists()
    train(faces, _config(freeze_backbone=True, epochs=1), base=base, out=out, run_dir=tmp_path / "r", overwrite=True)
    assert load_model_file(out)[1]["epochs"] == 1
    # --resume continues the run that wrote this --out (here: trains it longer), so it may replace it.
    result = train(faces, _config(freeze_backbone=True, epochs=2), base=base, out=out, run_dir=tmp_path / "r",
                   resume=True)
    assert result.epochs == 2 == load_model_file(out)[1]["epochs"]
    # But only its own: resuming one run onto the model another run wrote is refused, as is any other file.
    other = tmp_path / "other.pt"
    train(faces, _config(freeze_backbone=True, epochs=1, seed=5), base=base, out=other, run_dir=tmp_path / "r2")
    before = other.read_bytes()
    not_ours = r"exists and is not this run's model: give --force to replace it, or another --out$"
    with pytest.raises(ModelError, match=r"^--out .*other.pt " + not_ours):
        train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=other, run_dir=tmp_path / "r",
              resume=True)
    assert other.read_bytes() == before
    (junk := tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match=r"^--out .*notes.txt exists and cannot be read to tell which run wrote it"):
        train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=junk, run_dir=tmp_path / "r",
              resume=True)
    result = train(faces, _config(freeze_backbone=True, epochs=3), base=base, out=other, run_dir=tmp_path / "r",
                   resume=True, overwrite=True)
    assert load_model_file(other)[1]["epochs"] == 3


def test_resume_tells_why_it_may_not_replace_an_out(tmp_path: Path, base_state: dict) -> None:
    faces, base = _faces(), BaseModel(base_state, "b")
    config, run, out = _config(freeze_backbone=True, epochs=1), tmp_path / "r", tmp_path / "m.pt"
    train(faces, config, base=base, out=out, run_dir=run)
    good = out.read_bytes()
    out.write_bytes(good[: len(good) // 2])  # a copy cut short: which run wrote it cannot be read
    with pytest.raises(ModelError, match=r"^--out .*m.pt exists and cannot be read to tell which run wrote it: give "
                                         r"--force to replace it, or another --out$"):
        train(faces, config, base=base, out=out, run_dir=run, resume=True)
    train(faces, config, base=base, out=out, run_dir=run, resume=True, overwrite=True)
    assert out.read_bytes() == good  # the same run writes the same bytes
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(ModelError, match=r"^--out .*folder.pt is a folder: give the model file's name$"):
        train(faces, config, base=base, out=tmp_path / "folder.pt", run_dir=tmp_path / "r2", overwrite=True)
    assert not (tmp_path / "r2").exists()  # refused before the run began, not after its last epoch


def test_a_checkpoint_from_before_run_ids_rewrites_the_same_model(tmp_path: Path, base_state: dict) -> None:
    faces, base = _faces(), BaseModel(base_state, "b")
    config, run = _config(freeze_backbone=True, epochs=1), tmp_path / "r"
    train(faces, config, base=base, out=tmp_path / "m.pt", run_dir=run)
    ckpt = torch_load(run / "checkpoint.pt")
    del ckpt["run_id"]  # as written before runs were named (the checksum does not cover it)
    torch.save(ckpt, run / "checkpoint.pt")
    first = train(faces, config, base=base, out=tmp_path / "a.pt", run_dir=run, resume=True)
    second = train(faces, config, base=base, out=tmp_path / "b.pt", run_dir=run, resume=True)
    assert first.sha256 == second.sha256  # no new random id each time: the same model id for the catalog
    with pytest.raises(ModelError, match=r"exists and cannot be shown to be this run's model \(the run began before "
                                         r"runs were named\): give --force"):
        train(faces, config, base=base, out=tmp_path / "a.pt", run_dir=run, resume=True)
    # Trained on, the run is named from then on, and may replace its own model unasked.
    longer = _config(freeze_backbone=True, epochs=2)
    train(faces, longer, base=base, out=tmp_path / "c.pt", run_dir=run, resume=True)
    assert torch_load(run / "checkpoint.pt")["run_id"] == load_model_file(tmp_path / "c.pt")[1]["run_id"]
    train(faces, longer, base=base, out=tmp_path / "c.pt", run_dir=run, resume=True)


def test_an_out_written_by_another_run_during_training_is_kept(tmp_path: Path, base_state: dict) -> None:
    # Two runs of a sweep given the same --out: both start before either has written it.
    out, run = tmp_path / "m.pt", tmp_path / "r"
    config = _config(freeze_backbone=True, epochs=1)
    with pytest.raises(ModelError, match=rf"^--out {out} appeared during training .* and is kept; so is this run: "
                                         rf"write its model with the same command plus --resume --run-dir {run} "):
        train(_faces(), config, base=BaseModel(base_state, "b"), out=out, run_dir=run,
              on_step=lambda m: out.write_bytes(b"the other run's model"))
    assert out.read_bytes() == b"the other run's model" and (run / "checkpoint.pt").exists()
    result = train(_faces(), config, base=BaseModel(base_state, "b"), out=tmp_path / "other.pt", run_dir=run,
                   resume=True)
    assert result.steps > 0 and load_model_file(tmp_path / "other.pt")[1]["epochs"] == 1


def test_a_model_file_that_cannot_be_written_says_the_run_is_kept(tmp_path: Path, base_state: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.training import trainer

    def disk_full(*args: object, **kwargs: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer, "save_model_file", disk_full)
    run = tmp_path / "r"
    with pytest.raises(ModelError, match=rf"^cannot write {tmp_path / 'm.pt'}: No space left on device; .*"
                                         rf"--resume --run-dir {run}"):
        train(_faces(), _config(freeze_backbone=True, epochs=1), base=BaseModel(base_state, "b"),
              out=tmp_path / "m.pt", run_dir=run)
    assert (run / "checkpoint.pt").exists()
    trained = (run / "metrics.jsonl").read_text()
    monkeypatch.undo()  # room again: the same call plus resume writes the model, training nothing more
    result = train(_faces(), _config(freeze_backbone=True, epochs=1), base=BaseModel(base_state, "b"),
                   out=tmp_path / "m.pt", run_dir=run, resume=True)
    assert (tmp_path / "m.pt").exists() and result.out == str(tmp_path / "m.pt")
    assert (run / "metrics.jsonl").read_text() == trained


def test_too_few_identities_after_holding_out_validation_ones_says_why(tmp_path: Path) -> None:
    db = _named_catalog(tmp_path / "c.db", ["Ada", "Bob", "Cy"])
    with Catalog.open(db) as catalog:
        with pytest.raises(DataError, match=r"found 1 \(left out: 2 in the validation pairs\): add more people or "
                                            r"photos, or validate on pairs over other people$"):
            load_catalog_dataset(catalog, exclude={"Ada", "Bob"})


def test_pca_head_on_fewer_crops_than_dim_fills_in_the_base_embeddings_own_directions(base_state: dict) -> None:
    # Three crops span three directions of the 512-d embedding; the other five of an 8-d head used to be
    # an arbitrary basis of the rest (eigh's choice for a zero eigenvalue, changing with the thread count).
    from facecluster.training.trainer import init_head_from_base

    torch.manual_seed(1)
    feats = torch.randn(3, 1792).abs()
    model = build_model(8, BaseModel(base_state, "b"), 0.2, torch.device("cpu")).eval()
    init_head_from_base(model, base_state, feats)
    bn = {k: base_state[f"last_bn.{k}"].double() for k in ("weight", "bias", "running_mean", "running_var")}
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + model.last_bn.eps)
    a = base_state["last_linear.weight"].double() * scale[:, None]  # the base head: f = a x + shift
    v = (model.last_linear.weight.detach().double() @ torch.linalg.pinv(a)).T  # last_linear = V^T a
    x = torch.nn.functional.normalize(feats.double() @ a.T + (bn["bias"] - scale * bn["running_mean"]), dim=1)
    data_dirs = torch.linalg.svd(x, full_matrices=False)[2].T  # (512, 3): the crops' span
    rest = torch.eye(512, dtype=torch.float64) - data_dirs @ data_dirs.T
    base_dirs = torch.linalg.eigh(rest @ a @ a.T @ rest)[1][:, -5:]  # where the base embedding varies most
    want = data_dirs @ data_dirs.T + base_dirs @ base_dirs.T
    assert torch.allclose(v @ v.T, want, atol=1e-3)


def test_two_runs_started_in_the_same_second_get_their_own_default_run_folder(
        tmp_path: Path, fake_pipeline: None, weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two `facecluster train` started together (a sweep over --dim) shared train-<time>/: interleaved
    # metrics.jsonl, one args.json, and a checkpoint that --resume would continue under the other's options.
    import datetime as real

    import facecluster.commands.train as train_command
    from facecluster.training import trainer

    class Frozen(real.datetime):
        @classmethod
        def now(cls, tz: real.tzinfo | None = None) -> Frozen:
            return cls(2026, 11, 22, 14, 32, 13, tzinfo=tz)

    monkeypatch.setattr(train_command, "datetime", Frozen)
    seen: list[Path] = []
    monkeypatch.setattr(trainer, "train", lambda *a, run_dir, **k: seen.append(run_dir) or _DONE)
    lib = _library(tmp_path / "lib")
    for pid in (4101, 4102):  # two processes
        monkeypatch.setattr(train_command.os, "getpid", lambda pid=pid: pid)
        result = CliRunner().invoke(cli, ["train", "--data", str(lib), "--weights", str(weights_file),
                                          "--out", str(tmp_path / f"m{pid}.pt"), "-q"])
        assert result.exit_code == 0, result.output
    assert len(set(seen)) == 2 and seen[0].name.startswith("train-20261122-143213"), seen


def test_resume_refuses_a_damaged_or_foreign_checkpoint_and_rewrites_the_same_model(
        tmp_path: Path, base_state: dict) -> None:
    faces = _faces()
    base = BaseModel(base_state, "b")
    run = tmp_path / "r"
    train(faces, _config(freeze_backbone=True, epochs=1), base=base, out=tmp_path / "a.pt", run_dir=run)
    # Written again from the run folder (e.g. after the first write failed), the model is the same file:
    # the same sha256, so the same model id, and the catalog keeps its vectors.
    again = train(faces, _config(freeze_backbone=True, epochs=1), base=base, out=tmp_path / "b.pt", run_dir=run,
                  resume=True)
    assert again.sha256 == load_model_file(tmp_path / "a.pt")[1]["sha256"]
    ckpt_path = run / "checkpoint.pt"
    good = ckpt_path.read_bytes()
    weight = max(torch_load(ckpt_path)["model"].values(), key=lambda t: t.numel())
    blob = bytearray(good)
    at = blob.find(weight.numpy().tobytes())
    assert at > 0
    blob[at + 2] ^= 0x10  # one flipped bit, as a failing disk or copy makes it: torch.load does not notice
    ckpt_path.write_bytes(bytes(blob))
    damaged = (r"^cannot resume: checkpoint .* is damaged \(its weights or optimizer state do not match the "
               r"checksum written with them\); start a new run in another --run-dir$")
    with pytest.raises(ModelError, match=damaged):
        train(faces, _config(freeze_backbone=True, epochs=2), base=base, out=tmp_path / "c.pt", run_dir=run,
              resume=True)
    # The optimizer's state (Adagrad's running sums) too: a wrong one derails training as surely.
    ckpt_path.write_bytes(good)
    sums = [v for slots in torch_load(ckpt_path)["optimizer"]["state"].values() for v in slots.values()
            if isinstance(v, torch.Tensor) and v.numel() > 8]
    blob = bytearray(good)
    at = blob.find(sums[0].numpy().tobytes())
    assert at > 0
    blob[at + 3] ^= 0x40
    ckpt_path.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match=damaged):
        train(faces, _config(freeze_backbone=True, epochs=2), base=base, out=tmp_path / "c.pt", run_dir=run,
              resume=True)
    torch.save([1, 2], ckpt_path)  # loads with weights_only, but is no checkpoint of ours
    with pytest.raises(ModelError, match=r"^cannot resume: .* is not a facecluster training checkpoint; start a new "
                                         r"run in another --run-dir$"):
        train(faces, _config(freeze_backbone=True, epochs=2), base=base, out=tmp_path / "c.pt", run_dir=run,
              resume=True)
    assert not (tmp_path / "c.pt").exists()
