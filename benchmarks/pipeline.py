"""End-to-end throughput of the catalog pipeline (decode, detect, crop, embed, write) on CPU threads.

Each workload runs ``--repeats`` times into fresh catalogs; the top-level figures are the median run
(these shared cores vary by ±10% from run to run) and every run's photos/s is listed. Two workloads:
LFW-sized photos (250x250 JPEGs from ``lfw-dev``) and large photos (4000x3000 JPEG
canvases with several LFW faces pasted on, decoded at reduced size via JPEG draft mode). Model loading
is timed apart. Prints ONE JSON object::

    python benchmarks/pipeline.py --lfw-photos 300 --large-photos 20 --threads 2 --repeats 3
    python benchmarks/pipeline.py --crop-formats      # effect of the stored-crop encoding on embeddings
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def lfw_sample(lfw: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` LFW photos, a fixed random sample."""
    photos = sorted(lfw.rglob("*.jpg"))
    return sorted(random.Random(seed).sample(photos, min(n, len(photos))))


def make_large(sources: list[Path], target: Path, n: int, faces_per_photo: int = 5, seed: int = 0) -> list[Path]:
    """4000x3000 JPEGs, each a textured canvas with ``faces_per_photo`` LFW photos pasted at 350-700 px."""
    rng = random.Random(seed)
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        noise = np.random.default_rng(i).integers(60, 200, (30, 40, 3), dtype=np.uint8)
        canvas = Image.fromarray(noise).resize((4000, 3000), Image.Resampling.BILINEAR)
        for k in range(faces_per_photo):
            with Image.open(rng.choice(sources)) as face:
                side = rng.randint(350, 700)
                x = 100 + k * 760 + rng.randint(0, 40)
                canvas.paste(face.convert("RGB").resize((side, side)), (x, rng.randint(100, 3000 - side - 100)))
        path = target / f"large_{i:03d}.jpg"
        canvas.save(path, quality=90)
        out.append(path)
    return out


def run_pipeline(folder: Path, weights: Path, device: str, workers: int = 0) -> dict:
    """detect_paths with inline embedding over ``folder`` into a fresh catalog; returns timings."""
    from facecluster.catalog import Catalog
    from facecluster.config import DetectConfig, EmbedConfig, PipelineConfig
    from facecluster.embed import load_embedder
    from facecluster.pipeline import detect_paths, load_detector

    start = time.perf_counter()
    detector = load_detector(DetectConfig(), device)
    embedder = load_embedder(weights, None, device, EmbedConfig())
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, Catalog.open(Path(tmp) / "c.db") as catalog:
        start, cpu_start = time.perf_counter(), time.process_time()
        config = PipelineConfig(workers=workers)
        report = detect_paths(catalog, [folder], detector, embedder=embedder, crop_config=EmbedConfig(),
                              pipeline=config)
        seconds = time.perf_counter() - start
        # CPU seconds of this process (all its threads): independent of how busy the shared cores are,
        # so cores / cpu_s_per_photo bounds the photos/s an otherwise idle machine would reach.
        cpu_s = time.process_time() - cpu_start
        start = time.perf_counter()
        again = detect_paths(catalog, [folder], detector, embedder=embedder, crop_config=EmbedConfig(),
                             pipeline=config)
        rerun_s = time.perf_counter() - start
    return {
        "photos": report.detected,
        "faces": report.faces,
        "failed": len(report.failed),
        "seconds": round(seconds, 2),
        "photos_per_s": round(report.detected / seconds, 2),
        "faces_per_s": round(report.faces / seconds, 2),
        "cpu_s_per_photo": round(cpu_s / max(1, report.detected), 4),
        "cpu_s_per_face": round(cpu_s / max(1, report.faces), 4),
        "model_load_s": round(load_s, 2),
        "rerun_s": round(rerun_s, 3),
        "rerun_skipped": again.skipped,
        "model_id": embedder.model_id,
    }


def _fresh_run(folder: Path, weights: Path, device: str, threads: int, workers: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return run_pipeline(folder, weights, device, workers)


def repeated(folder: Path, weights: Path, device: str, threads: int, repeats: int, workers: int = 0) -> dict:
    """``run_pipeline`` ``repeats`` times, each in a fresh process (as a user's command starts: no kernel
    or page cache of the process warmed by an earlier run): the median run (by photos/s) plus every run's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    runs = []
    for _ in range(max(1, repeats)):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs.append(pool.submit(_fresh_run, folder, weights, device, threads, workers).result())
    runs.sort(key=lambda run: run["photos_per_s"])
    return {**runs[len(runs) // 2], "runs_photos_per_s": [run["photos_per_s"] for run in runs]}


def crop_formats(lfw: Path, weights: Path, n: int = 150) -> dict:
    """Embedding change caused by storing crops as PNG / JPEG q95 / q90 instead of the raw pixels."""
    from facecluster.align import centre_face, crop_face
    from facecluster.config import EmbedConfig, PipelineConfig
    from facecluster.embed import load_embedder
    from facecluster.pipeline import decode_crop, encode_crop

    files = sorted(lfw.rglob("*.jpg"))[::25][:n]
    embedder = load_embedder(weights=weights, config=EmbedConfig(flip=False))
    crops = []
    for f in files:
        pixels = np.asarray(Image.open(f).convert("RGB"))
        crops.append(crop_face(pixels, centre_face(pixels.shape[:2]), size=160, margin=32))
    raw = np.stack(crops)
    reference = embedder.embed(raw)
    out: dict = {"model_id": embedder.model_id, "crops": len(raw)}
    for name, cfg in [("png", PipelineConfig(crop_format="png")), ("jpeg95", PipelineConfig(crop_format="jpeg")),
                      ("jpeg90", PipelineConfig(crop_format="jpeg", jpeg_quality=90))]:
        start = time.perf_counter()
        blobs = [encode_crop(c, cfg) for c in raw]
        encode_ms = (time.perf_counter() - start) / len(raw) * 1000
        start = time.perf_counter()
        decoded = np.stack([decode_crop(b) for b in blobs])
        decode_ms = (time.perf_counter() - start) / len(raw) * 1000
        d2 = ((embedder.embed(decoded) - reference) ** 2).sum(axis=1)
        out[name] = {"bytes_mean": int(np.mean([len(b) for b in blobs])), "encode_ms": round(encode_ms, 2),
                     "decode_ms": round(decode_ms, 2), "d2_mean": float(d2.mean()), "d2_max": float(d2.max())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-photos", type=int, default=300)
    parser.add_argument("--large-photos", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload; the median is reported")
    parser.add_argument("--workers", type=int, default=0,
                        help="PipelineConfig.workers: 0 = one single-threaded worker per thread; 1 = one worker "
                             "with all threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "facenet-casia-webface.pt")
    parser.add_argument("--lfw", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--crop-formats", action="store_true", help="only measure the stored-crop encodings")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("FACECLUSTER_WEIGHTS_DIR", str(args.weights.parent))
    if not args.lfw.is_dir() or not args.weights.is_file():
        raise SystemExit(f"needs {args.lfw} and {args.weights}")
    if args.crop_formats:
        print(json.dumps(crop_formats(args.lfw, args.weights)))
        return
    result: dict = {"threads": args.threads, "workers": args.workers, "device": args.device,
                    "load_average_at_start": os.getloadavg()[0]}
    work = Path(tempfile.mkdtemp(prefix="facecluster-bench-"))
    try:
        sample = lfw_sample(args.lfw, args.lfw_photos)
        small = work / "lfw"
        small.mkdir()
        for i, photo in enumerate(sample):
            shutil.copy2(photo, small / f"{i:05d}_{photo.name}")
        if args.lfw_photos:
            result["lfw_250x250"] = repeated(small, args.weights, args.device, args.threads, args.repeats,
                                             args.workers)
        if args.large_photos:
            large = make_large(sample, work / "large", args.large_photos)
            result["large_4000x3000"] = {**repeated(large[0].parent, args.weights, args.device, args.threads,
                                                     args.repeats, args.workers),
                                         "pasted_faces_per_photo": 5}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
