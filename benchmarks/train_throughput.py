"""Training throughput of ``facecluster train``: faces/s per training step, printed as ONE JSON object.

One step = forward of a P x K batch, semi-hard mining, triplet loss, backward, optimiser step
(InceptionResnetV1, random weights: speed does not depend on their values). Measured on CPU for
full fine-tuning and for the frozen-backbone head (cached features); on CUDA, when a GPU is present,
fp32 vs bf16 autocast, each with and without ``torch.compile``. Without a GPU the CUDA part says
``"skipped"``.

    python benchmarks/train_throughput.py --threads 2 --steps 3 > train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch

from facecluster.training.losses import TripletLoss
from facecluster.training.miners import SemiHardMiner
from facecluster.training.trainer import BaseModel, _augment, build_model, head_embeddings, standardise


def _batch(p: int, k: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    crops = torch.randint(0, 256, (p * k, size, size, 3), dtype=torch.uint8, generator=g)
    return crops, torch.arange(p).repeat_interleave(k)


def _time_steps(step: Any, steps: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + steps):
        tick = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return times


def full_step_rate(device: torch.device, p: int, k: int, size: int, steps: int, warmup: int,
                   amp: bool = False, compile_: bool = False) -> dict[str, Any]:
    """faces/s of full fine-tuning steps (backbone BN statistics frozen, as the trainer does)."""
    model = build_model(128, BaseModel(None, "random"), 0.2, device)
    model.train()
    net = torch.compile(model) if compile_ else model
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)
    crops, labels = _batch(p, k, size)
    labels = labels.to(device)
    miner, loss_fn, gen = SemiHardMiner(0.2, torch.Generator().manual_seed(0)), TripletLoss(0.2), torch.Generator().manual_seed(1)

    def step() -> None:
        x = _augment(standardise(crops), 8, gen).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            emb = net(x)
        emb = emb.float()
        result = loss_fn(emb, miner(emb, labels))
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()

    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = _time_steps(step, steps, warmup, device)
    if device.type == "cuda":
        peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    median = statistics.median(times)
    return {"batch": p * k, "crop": size, "amp_bf16": amp, "compile": compile_, "steps": steps,
            "seconds_per_step": round(median, 4), "faces_per_s": round(p * k / median, 1),
            "step_seconds": [round(t, 4) for t in times], "peak_mib": peak}


def frozen_step_rate(device: torch.device, p: int, k: int, steps: int, warmup: int) -> dict[str, Any]:
    """faces/s of frozen-backbone steps: only the new layer on cached 1792-d features."""
    model = build_model(128, BaseModel(None, "random"), 0.2, device)
    model.train()
    params = list(model.last_linear.parameters()) + list(model.last_bn.parameters())
    optimizer = torch.optim.Adagrad(params, lr=0.05)
    feats = torch.randn(p * k, 1792, device=device).abs()
    labels = torch.arange(p).repeat_interleave(k).to(device)
    miner, loss_fn = SemiHardMiner(0.2, torch.Generator().manual_seed(0)), TripletLoss(0.2)

    def step() -> None:
        emb = head_embeddings(model, feats)
        result = loss_fn(emb, miner(emb, labels))
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()

    times = _time_steps(step, steps * 20, warmup, device)  # tiny steps: more of them for a stable median
    median = statistics.median(times)
    return {"batch": p * k, "seconds_per_step": round(median, 6), "faces_per_s": round(p * k / median, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", "-P", type=int, default=8)
    parser.add_argument("--faces", "-K", type=int, default=4)
    parser.add_argument("--size", type=int, default=160, help="crop size in pixels")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the project's machines have 2 cores)")
    parser.add_argument("--cuda-batch-identities", type=int, default=45, help="P on CUDA (45 x 40 = the paper's 1800)")
    parser.add_argument("--cuda-batch-faces", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    report: dict[str, Any] = {
        "benchmark": "train_throughput",
        "python": platform.python_version(), "torch": str(torch.__version__), "threads": args.threads,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "weights": "random (speed does not depend on values)",
        "cpu": {
            "full_fine_tuning": full_step_rate(cpu, args.identities, args.faces, args.size, args.steps, args.warmup),
            "frozen_backbone_head": frozen_step_rate(cpu, args.identities, args.faces, args.steps, args.warmup),
        },
    }
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        p, k = args.cuda_batch_identities, args.cuda_batch_faces
        report["cuda"] = {"device": torch.cuda.get_device_name(dev)}
        for amp in (False, True):
            for compile_ in (False, True):
                key = f"{'bf16' if amp else 'fp32'}{'+compile' if compile_ else ''}"
                try:
                    report["cuda"][key] = full_step_rate(dev, p, k, args.size, max(args.steps, 5), 2 if compile_ else 1,
                                                         amp=amp, compile_=compile_)
                except Exception as exc:  # noqa: BLE001 - one failing variant (e.g. compile) must not hide the rest
                    report["cuda"][key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        report["cuda"]["frozen_backbone_head"] = frozen_step_rate(dev, p, k, args.steps, args.warmup)
    else:
        report["cuda"] = {"skipped": "no CUDA device on this machine"}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
