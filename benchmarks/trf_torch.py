"""Benchmark: ``rfjax.trf`` of torchvision models given as ``torch.nn.Module``, conversion
included.

Run by hand (never in the tests): ``python benchmarks/trf_torch.py`` (``--models resnet50
densenet121 swin_t``, ``--repeats``, ``--size``); needs the ``torch`` extra
(``pip install -e ".[torch]"``). Per model (random weights, batch 1, NCHW), best and median of
``--repeats`` runs of ``rfjax.trf(module, (1, 3, S, S))`` after ``rfjax.clear_cache()``, so
every run exports the module with ``torch.export``, lowers it to JAX, traces it and computes
the field. The first run in the process is reported apart (it pays torch's own one-off
initialisation of ``torch.export``). It prints the split of the last run: export, lowering +
trace + field. The README records the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torchvision

import rfjax
from rfjax.adapters import pytorch as rt

MODELS = {
    "resnet50": "ResNet-50",
    "densenet121": "DenseNet-121",
    "swin_t": "Swin-T",
    "efficientnet_b0": "EfficientNet-B0",
    "convnext_tiny": "ConvNeXt-T",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "densenet121", "swin_t"],
                    choices=sorted(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}")
    shape = (1, 3, args.size, args.size)
    for name in args.models:
        model = torchvision.models.get_model(name, weights=None).eval()
        times = []
        for _ in range(args.repeats + 1):
            rfjax.clear_cache()
            t0 = time.perf_counter()
            t = rfjax.trf(model, shape)
            times.append(time.perf_counter() - t0)
        rfjax.clear_cache()
        t0 = time.perf_counter()
        rt.program(model, shape)
        export = time.perf_counter() - t0
        first, rest = times[0], times[1:]
        print(f"{MODELS[name]:16s} trf {min(rest):.2f} s best, {statistics.median(rest):.2f} s "
              f"median of {len(rest)} (first in process {first:.2f} s; export alone "
              f"{export:.2f} s); field {t.size}, stride {t.stride}")


if __name__ == "__main__":
    main()
