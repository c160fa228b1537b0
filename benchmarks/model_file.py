"""What checking ``state_sha256`` adds to loading a trained model file.

Writes one model file of a random ``--dim`` InceptionResnetV1 (512: the pretrained size, about 23.5M values)
with ``save_model_file``, and the same payload without ``state_sha256`` (as written before the key existed),
then times ``read_model_file`` on both ``--repeats`` times, alternating, and ``state_sha256`` alone on the
loaded state dict. Both files are in the page cache after the first read, so the figures leave out the disk.
Prints ONE JSON object::

    python benchmarks/model_file.py --repeats 25
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the NaN check uses them)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))  # this checkout's facecluster, not an installed one
    import torch

    from facecluster.models.inception_resnet_v1 import InceptionResnetV1
    from facecluster.models.model_file import read_model_file, save_model_file, state_sha256

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = InceptionResnetV1(embedding_dim=args.dim).eval()
    times: dict[str, list[float]] = {"without": [], "checked": [], "digest": []}
    with tempfile.TemporaryDirectory() as tmp:
        checked = Path(tmp) / "checked.pt"
        save_model_file(checked, model, base="random", meta={})
        payload = torch.load(checked, weights_only=True)
        state = payload["state_dict"]
        without = Path(tmp) / "without.pt"
        torch.save({k: v for k, v in payload.items() if k != "state_sha256"}, without)
        size = checked.stat().st_size
        for path in (without, checked):  # into the page cache
            read_model_file(path)
        for _ in range(args.repeats):
            for name, path in (("without", without), ("checked", checked)):
                start = time.perf_counter()
                read_model_file(path)
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            state_sha256(state)
            times["digest"].append(time.perf_counter() - start)
    tensor_bytes = sum(v.numel() * v.element_size() for v in state.values())
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "dim": args.dim,
        "values_millions": round(sum(v.numel() for v in state.values()) / 1e6, 2),
        "file_mb": round(size / 1e6, 1),
        "repeats": args.repeats,
        "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "median_s_read_without": round(median["without"], 4),
        "median_s_read_checked": round(median["checked"], 4),
        "added_s": round(median["checked"] - median["without"], 4),
        "median_s_state_sha256": round(median["digest"], 4),
        "min_s_state_sha256": round(min(times["digest"]), 4),
        "state_sha256_mb_per_s": round(tensor_bytes / 1e6 / median["digest"], 1),
        "runs_s_without": [round(t, 4) for t in times["without"]],
        "runs_s_checked": [round(t, 4) for t in times["checked"]],
    }))


if __name__ == "__main__":
    main()
