"""Throughput of detection and embedding, printed as ONE JSON object on stdout.

    python benchmarks/embed_throughput.py                # 2 CPU threads, CUDA too when a GPU is present
    python benchmarks/embed_throughput.py --faces 256 --batch-sizes 1,8,32,128

Uses the real weights from ../shared (or $FACECLUSTER_SHARED) when present, random weights otherwise
(the JSON says which). Detection runs on real LFW photos when ../shared/data/lfw-dev exists; with random
MTCNN weights detection speed means nothing, so it is skipped then. Timings on a shared machine are noisy:
the JSON records the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def _timed(fn: Any, repeats: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def embedding_throughput(device: str, batch_sizes: list[int], faces: int) -> dict[str, Any]:
    from facecluster.models.inception_resnet_v1 import InceptionResnetV1

    weights = SHARED / "weights" / "facenet-casia-webface.pt"
    if weights.exists():
        model = InceptionResnetV1.from_state_dict(torch.load(weights, map_location="cpu", weights_only=True), device)
        source = str(weights)
    else:
        torch.manual_seed(0)
        model = InceptionResnetV1(device=device).eval()
        source = "random"
    out: dict[str, Any] = {"weights": source, "faces_per_s": {}}
    for batch in batch_sizes:
        x = torch.randn(batch, 3, 160, 160, device=device)
        repeats = max(1, faces // batch)

        def run() -> None:
            with torch.inference_mode():
                model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        seconds = _timed(run, repeats)
        out["faces_per_s"][str(batch)] = round(batch / seconds, 2)
    return out


def detection_throughput(device: str, photos: int) -> dict[str, Any]:
    lfw = SHARED / "data" / "lfw-dev"
    mtcnn = SHARED / "weights" / "mtcnn"
    if not (lfw.is_dir() and (mtcnn / "pnet.pt").exists()):
        return {"skipped": "needs ../shared/weights/mtcnn and ../shared/data/lfw-dev (random MTCNN weights "
                           "give meaningless proposal counts)"}
    try:
        from facecluster.config import DetectConfig
        from facecluster.detect import MTCNNDetector
    except ImportError as exc:
        return {"skipped": f"facecluster.detect not available: {exc}"}
    from PIL import Image

    os.environ.setdefault("FACECLUSTER_WEIGHTS_DIR", str(SHARED / "weights"))
    detector = MTCNNDetector.pretrained(config=DetectConfig(), device=device)
    paths = sorted(lfw.glob("*/*.jpg"))[:photos]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    out: dict[str, Any] = {"weights": str(mtcnn), "photos": len(images), "photo_size": "250x250"}
    for batch in (1, 16):
        found = 0
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            found += sum(len(f) for f in detector.detect(images[i:i + batch]))
        seconds = time.perf_counter() - start
        out[f"batch_{batch}"] = {"photos_per_s": round(len(images) / seconds, 2),
                                 "faces_per_s": round(found / seconds, 2), "faces": found}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=64, help="faces embedded per batch size (default 64)")
    parser.add_argument("--photos", type=int, default=64, help="LFW photos detected (default 64)")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    result: dict[str, Any] = {
        "torch": torch.__version__, "threads": args.threads, "load_average_at_start": os.getloadavg()[0],
        "cpu": {"embedding": embedding_throughput("cpu", batch_sizes, args.faces),
                "detection": detection_throughput("cpu", args.photos)},
    }
    if torch.cuda.is_available():
        result["cuda"] = {"device": torch.cuda.get_device_name(0),
                          "embedding": embedding_throughput("cuda", batch_sizes + [128], args.faces * 4),
                          "detection": detection_throughput("cuda", args.photos * 4)}
    else:
        result["cuda"] = {"skipped": "no CUDA GPU"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
