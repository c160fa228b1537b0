"""LFW verification: pairs parsing, thresholds against brute force, VAL@FAR, ROC PNG, the command."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facecluster import evaluate as ev
from facecluster.cli import cli
from facecluster.config import EmbedConfig
from facecluster.errors import DataError

# --- pairs files ---------------------------------------------------------------------------------------


def write_pairs(path: Path, folds: int = 2, n: int = 2, names: tuple[str, ...] = ("Ann", "Bob", "Cy")) -> Path:
    lines = [f"{folds}\t{n}"]
    for fold in range(folds):
        for i in range(n):
            lines.append(f"{names[(fold + i) % len(names)]}\t1\t2")
        for i in range(n):
            lines.append(f"{names[i % len(names)]}\t1\t{names[(i + 1) % len(names)]}\t2")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_pairs_reads_folds_and_labels(tmp_path: Path) -> None:
    pairs = ev.parse_pairs(write_pairs(tmp_path / "pairs.txt", folds=3, n=2))
    assert len(pairs) == 12
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4 + [2] * 4
    assert [p.same for p in pairs[:4]] == [True, True, False, False]
    assert pairs[2] == ev.Pair("Ann", 1, "Bob", 2, False, 0)
    assert pairs[0].paths(Path("lfw")) == (Path("lfw/Ann/Ann_0001.jpg"), Path("lfw/Ann/Ann_0002.jpg"))


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("ten\t2\n", "bad header"), ("2\t1\nAnn\t1\t2\n", "promises 4 pairs"),
     ("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t2\nAnn\t1\nBob\t1\tCy\t1\n", "line 4"),
     ("2\t1\nAnn\t1\t2\nAnn\t1\t2\nAnn\t1\t2\nBob\t1\tCy\t1\n", "mismatched")],
)
def test_malformed_pairs_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        ev.parse_pairs(path)
    with pytest.raises(DataError, match="cannot read"):
        ev.parse_pairs(tmp_path / "absent.txt")


def test_pairs_file_that_never_ends_is_refused_not_read_into_memory(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # `--pairs /dev/zero` (or a huge file by mistake) read the whole stream into memory: killed for memory.
    monkeypatch.setattr(ev, "MAX_PAIRS_BYTES", 1 << 20)
    big = tmp_path / "big.txt"
    big.write_text("2\t1\n" + "Ann 1 2\n" * 200_000)
    sources = [big] + ([Path("/dev/zero")] if Path("/dev/zero").exists() else [])
    for source in sources:
        with pytest.raises(DataError, match=r"is larger than 1 MiB: not an LFW pairs file") as info:
            ev.parse_pairs(source)
        assert "\n" not in str(info.value)
    ok = write_pairs(tmp_path / "pairs.txt")
    assert len(ev.parse_pairs(ok)) == 8  # a pipe or a normal file under the limit reads as before


# --- the math against brute force ----------------------------------------------------------------------


def brute_best_accuracy(d: np.ndarray, same: np.ndarray) -> float:
    candidates = np.concatenate([[d.min() - 1], d, [d.max() + 1]])
    return max(float(np.mean((d < t) == same)) for t in np.unique(candidates) + 1e-9)


def test_best_threshold_reaches_the_brute_force_optimum() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        same = rng.random(60) < 0.5
        d = np.round(np.where(same, rng.normal(0.9, 0.3, 60), rng.normal(1.5, 0.3, 60)), 2)  # ties on purpose
        threshold, accuracy = ev.best_threshold(d, same)
        assert accuracy == pytest.approx(brute_best_accuracy(d, same))
        assert float(np.mean((d < threshold) == same)) == pytest.approx(accuracy)


def test_best_threshold_takes_the_middle_of_the_gap() -> None:
    assert ev.best_threshold(np.array([0.2, 0.5, 1.5, 1.8]), np.array([True, True, False, False])) == (1.0, 1.0)


def test_k_fold_metrics_equal_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    folds = np.repeat(np.arange(10), 40)
    same = np.tile(np.r_[np.ones(20, bool), np.zeros(20, bool)], 10)
    d = np.where(same, rng.normal(0.8, 0.25, 400), rng.normal(1.6, 0.25, 400))
    r = ev.verification_metrics(d, same, folds)
    expected = []
    for k in range(10):
        t, _ = ev.best_threshold(d[folds != k], same[folds != k])
        expected.append(np.mean((d[folds == k] < t) == same[folds == k]))
    assert r.accuracy == pytest.approx(np.mean(expected)) and r.accuracy_std == pytest.approx(np.std(expected))
    assert r.fold_accuracies == pytest.approx(expected)
    # LFW's standard error of the mean, written out: sample variance over k - 1, divided by k.
    mean = sum(expected) / 10
    assert r.accuracy_sem == pytest.approx((sum((p - mean) ** 2 for p in expected) / 9 / 10) ** 0.5)
    assert 0.9 < r.accuracy <= 1.0 and 1.0 < r.threshold < 1.4


def test_val_at_far_on_separable_and_overlapping_data() -> None:
    folds = np.repeat(np.arange(2), 4)
    same = np.tile([True, True, False, False], 2)
    separable = np.tile([0.1, 0.2, 2.0, 3.0], 2)
    r = ev.verification_metrics(separable, same, folds, far_target=0.5)
    assert r.accuracy == 1.0 and r.val == 1.0 and r.far == 0.5  # FAR 0.5: one of two different pairs accepted
    # FAR 1e-3 is never reached with 2 different pairs per training fold: threshold 0, nothing accepted.
    strict = ev.verification_metrics(separable, same, folds)
    assert strict.val == 0.0 and strict.far == 0.0


def test_far_threshold_interpolates_the_false_accept_curve() -> None:
    rng = np.random.default_rng(2)
    different = rng.uniform(0, 4, 1000)
    d = np.r_[rng.uniform(0, 1, 100), different]
    same = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    t = ev._far_threshold(d, same, 0.1)
    assert np.mean(different < t) == pytest.approx(0.1, abs=0.002)


def test_roc_curve_and_png(tmp_path: Path) -> None:
    far, tpr = ev.roc_curve(np.array([0.1, 0.4, 0.3, 2.0]), np.array([True, False, True, False]))
    assert far.tolist() == [0, 0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1, 1]
    ev.write_roc_png(tmp_path / "roc.png", far, tpr, title="test")
    with Image.open(tmp_path / "roc.png") as image:
        assert image.format == "PNG" and image.size == (640, 640)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 2  # something is drawn


def test_choose_face_prefers_large_central_faces() -> None:
    boxes = np.array([[0, 0, 60, 60], [100, 100, 180, 180], [110, 110, 150, 150]])
    assert ev.choose_face(boxes, (280, 280)) == 1


# --- the whole run with fakes ---------------------------------------------------------------------------


@dataclass
class FakeFace:
    box: tuple[float, float, float, float]
    landmarks: None = None
    probability: float = 0.99


class FakeDetector:
    """Finds one face in the middle of every photo except the all-black ones."""

    def detect(self, images: list[np.ndarray]) -> list[list[FakeFace]]:
        return [[] if image.max() == 0 else [FakeFace((20, 20, 60, 60))] for image in images]


class ColourEmbedder:
    """Embeds a crop by its mean colour: photos of one person share a colour in the fake LFW."""

    model_id = "fake:00000000"
    dim = 3
    config = EmbedConfig(crop_size=32, margin=4)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        v = crops.reshape(len(crops), -1, 3).mean(axis=1).astype(np.float32) + 1.0
        return v / np.linalg.norm(v, axis=1, keepdims=True)


COLOURS = {"Ann": (250, 10, 10), "Bob": (10, 250, 10), "Cy": (10, 10, 250)}


@pytest.fixture()
def fake_lfw(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "lfw"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            Image.new("RGB", (80, 80), colour).save(root / name / f"{name}_{i:04d}.jpg")
    Image.new("RGB", (80, 80), (0, 0, 0)).save(root / "Cy" / "Cy_0002.jpg")  # no face found here
    return root, write_pairs(tmp_path / "pairs.txt", folds=2, n=3)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_evaluate_lfw_counts_no_face_and_skipped(fake_lfw: tuple[Path, Path]) -> None:
    root, pairs_path = fake_lfw
    (root / "Bob" / "Bob_0002.jpg").unlink()  # a missing photo drops the pairs that need it
    pairs = ev.parse_pairs(pairs_path)
    seen: list[tuple[str, int, int | None]] = []
    report, d, same = ev.evaluate_lfw(root, pairs, FakeDetector(), ColourEmbedder(), read_rgb, batch_size=2,
                                      progress=lambda s, done, total: seen.append((s, done, total)))
    needs_bob2 = sum(1 for p in pairs if "Bob/Bob_0002.jpg" in " ".join(map(str, p.paths(root))))
    assert report.skipped == needs_bob2 > 0 and report.pairs == len(pairs) - needs_bob2
    assert report.no_face == 1 and report.images == 5
    assert report.missing == [str(root / "Bob" / "Bob_0002.jpg")]
    assert len(d) == report.pairs and seen[-1] == ("lfw", 6, 6)
    out = report.as_dict()
    for key in ("accuracy", "accuracy_std", "accuracy_sem", "val_at_far_1e-3", "threshold", "pairs", "skipped", "no_face",
                "model_id", "seconds"):
        assert key in out
    json.dumps(out)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        # fold 2's photos are all missing: one fold left, nothing to hold out (numpy warned "Mean of empty slice")
        (["Ann 1 2", "Ann 1 Bob 1", "Zed 1 2", "Zed 1 Bob 2"], "only 1 fold of 2 has pairs that could be evaluated"),
        # every mismatched pair is missing: "100% accuracy" would be measured on matched pairs only
        (["Ann 1 2", "Zed 1 Ann 1", "Bob 1 2", "Zed 2 Bob 1"], "no mismatched pair could be evaluated"),
        (["Zed 1 2", "Ann 1 Bob 1", "Zed 3 4", "Bob 1 Cy 1"], "no matched pair could be evaluated"),
    ],
)
def test_pairs_left_after_missing_photos_must_still_measure_something(
    fake_lfw: tuple[Path, Path], tmp_path: Path, lines: list[str], message: str
) -> None:
    root, _ = fake_lfw
    pairs_file = tmp_path / "few.txt"
    pairs_file.write_text("2\t1\n" + "\n".join(lines) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy on the way to the message
        with pytest.raises(DataError, match=message) as info:
            ev.evaluate_lfw(root, ev.parse_pairs(pairs_file), FakeDetector(), ColourEmbedder(), read_rgb)
    assert "skipped" in str(info.value) and "\n" not in str(info.value)


def test_command_prints_one_json_object_and_writes_the_roc(fake_lfw: tuple[Path, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.commands import evaluate_lfw as command_module

    root, pairs_path = fake_lfw
    monkeypatch.setattr(command_module, "load_detector", lambda device, progress: FakeDetector())
    monkeypatch.setattr(command_module, "read_image", read_rgb)
    monkeypatch.setattr("facecluster.embed.load_embedder", lambda **kwargs: ColourEmbedder())
    roc = tmp_path / "roc.png"
    result = CliRunner().invoke(cli, ["evaluate", "lfw", "--images", str(root), "--pairs", str(pairs_path),
                                      "--json", "--roc", str(roc)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["pairs"] == 12 and out["skipped"] == 0 and out["no_face"] == 1
    assert out["model_id"] == "fake:00000000" and 0 <= out["accuracy"] <= 1
    assert "accuracy" in result.stderr
    assert roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unwritable_roc_is_refused_before_detection(fake_lfw: tuple[Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.commands import evaluate_lfw as command_module

    root, pairs_path = fake_lfw
    started: list[str] = []
    monkeypatch.setattr(command_module, "load_detector", lambda device, progress: started.append("detector"))
    monkeypatch.setattr("facecluster.embed.load_embedder", lambda **kwargs: started.append("embedder"))
    roc = tmp_path / "nonexistent-dir" / "roc.png"
    result = CliRunner().invoke(cli, ["evaluate", "lfw", "--images", str(root), "--pairs", str(pairs_path),
                                      "--roc", str(roc)])
    assert result.exit_code == 1 and "does not exist" in result.stderr and result.stderr.count("\n") == 1
    assert started == []


def test_results_are_printed_before_the_roc_is_written(fake_lfw: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.commands import evaluate_lfw as command_module

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "roc.png"))

    root, pairs_path = fake_lfw
    monkeypatch.setattr(command_module, "load_detector", lambda device, progress: FakeDetector())
    monkeypatch.setattr(command_module, "read_image", read_rgb)
    monkeypatch.setattr("facecluster.embed.load_embedder", lambda **kwargs: ColourEmbedder())
    monkeypatch.setattr(ev, "write_roc_png", disk_full)
    result = CliRunner().invoke(cli, ["evaluate", "lfw", "--images", str(root), "--pairs", str(pairs_path),
                                      "--json", "--roc", str(tmp_path / "roc.png")])
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert json.loads(result.stdout)["pairs"] == 12 and "accuracy" in result.stderr  # the measurement survives


def test_command_exits_3_when_pairs_are_skipped(fake_lfw: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.commands import evaluate_lfw as command_module

    root, pairs_path = fake_lfw
    (root / "Ann" / "Ann_0001.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setattr(command_module, "load_detector", lambda device, progress: FakeDetector())
    monkeypatch.setattr(command_module, "read_image", read_rgb_or_image_error)
    monkeypatch.setattr("facecluster.embed.load_embedder", lambda **kwargs: ColourEmbedder())
    result = CliRunner().invoke(cli, ["evaluate", "lfw", "--images", str(root), "--pairs", str(pairs_path), "-q"])
    assert result.exit_code == 3
    assert result.stdout == ""
    # -q silences the summary, not the reason for exit code 3
    assert result.stderr.startswith("missing or unreadable: ") and "Ann_0001.jpg" in result.stderr


def read_rgb_or_image_error(path: Path) -> np.ndarray:
    from facecluster.errors import ImageError

    try:
        return read_rgb(path)
    except OSError as exc:
        raise ImageError(f"cannot decode {path}") from exc


def test_command_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "lfw", "--images", str(tmp_path / "none"), "--pairs", "p.txt"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "is not a folder" in result.stderr
    (tmp_path / "lfw").mkdir()
    write_pairs(tmp_path / "p.txt")
    result = runner.invoke(cli, ["evaluate", "lfw", "--images", str(tmp_path / "lfw"), "--pairs",
                                 str(tmp_path / "p.txt")])
    assert result.exit_code == 1 and "Error:" in result.stderr and "vggface2" in result.stderr  # offline


def test_help_ends_with_an_example() -> None:
    result = CliRunner().invoke(cli, ["evaluate", "lfw", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--roc" in result.output


def test_centred_distances_use_only_the_training_folds() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(8, 4)) + 5.0  # a large common offset that the mean subtraction removes
    b = rng.normal(size=(8, 4)) + 5.0
    folds = np.repeat(np.arange(2), 4)
    rows = ev.centred_distances(a, b, folds)
    assert rows.shape == (2, 8)
    mean = np.concatenate([a[4:], b[4:]]).mean(axis=0)  # fold 0 held out: mean of fold 1
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    assert np.allclose(rows[0], ev.squared_distances(unit(a - mean), unit(b - mean)))
    assert np.allclose(ev.out_of_fold(rows, folds), np.r_[rows[0, :4], rows[1, 4:]])
    same = np.array([True, True, False, False] * 2)
    r = ev.verification_metrics(rows, same, folds)
    assert len(r.fold_accuracies) == 2
