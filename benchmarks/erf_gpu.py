"""Benchmark: the ERF on the backend JAX runs on (written for a GPU; runs on the CPU too).

Run by hand (never in the tests): ``python benchmarks/erf_gpu.py`` on a GPU machine with the
``torch`` extra (``pip install -e ".[torch]"``); ``--small`` shrinks every workload for a CPU
smoke run. Each workload is one PyTorch module, so rfjax (through :func:`rfjax.erf`'s PyTorch
front door, ``precision="highest"`` and ``"default"``) and PyTorch autograd (batched, and the
per-image loop of RepLKNet's ``erf/visualize_erf.py``) see identical weights:

- ResNet-50 (torchvision, random weights) at 224x224, the centre unit of ``layer4``;
- 10 ReLU 3x3 convs, 64 channels, 64x64 px; 20 ReLU 3x3 convs, 32 channels, 224x224 px.

Printed per workload: first-call and steady seconds, images/s, the ratio of rfjax's steady
time to its forward pass alone, and the largest difference between rfjax's and PyTorch's
maps (relative to the maximum). Device, software versions and date come first.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

import rfjax


def stack(n: int, ch: int) -> torch.nn.Module:
    layers, c = [], 3
    for _ in range(n):
        layers += [torch.nn.Conv2d(c, ch, 3, padding=1), torch.nn.ReLU()]
        c = ch
    return torch.nn.Sequential(*layers)


def torch_erf(module, x, unit, layer, per_image: bool, device) -> np.ndarray:
    feats = {}
    target = dict(module.named_modules())[layer] if layer else module
    hook = target.register_forward_hook(lambda m, i, o: feats.__setitem__("o", o))
    try:
        xs = [x[i:i + 1] for i in range(len(x))] if per_image else [x]
        total = 0
        for xb in xs:
            xb = xb.to(device).requires_grad_(True)
            module(xb)
            feats["o"][(slice(None), slice(None)) + unit].sum().backward()
            total = total + xb.grad.abs().sum(1).sum(0)
        return (total / len(x)).cpu().numpy()
    finally:
        hook.remove()


def timed(fn, repeats: int):
    t0 = time.perf_counter()
    first_out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), first_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny workloads (CPU smoke run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop", action="store_true", help="also time PyTorch's per-image loop")
    args = ap.parse_args()
    dev = jax.devices()[0]
    tdev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{datetime.date.today()}  JAX {jax.__version__} on {dev.platform} "
          f"({dev.device_kind}); torch {torch.__version__} on {tdev}; rfjax {rfjax.__version__}")
    s = args.small
    work = [("ResNet-50 layer4", lambda: torchvision.models.resnet50(),
             (16 if s else 1000, 3, 64 if s else 224), "layer4", 8 if s else 125),
            ("10 ReLU convs", lambda: stack(10, 16 if s else 64),
             (32 if s else 1024, 3, 32 if s else 64), None, 16 if s else 256),
            ("20 ReLU convs", lambda: stack(20, 8 if s else 32),
             (8 if s else 256, 3, 64 if s else 224), None, 8 if s else 64)]
    for name, make, (n, c, hw), layer, chunk in work:
        torch.manual_seed(0)
        bench(f"{name} {hw}px", make().eval(), torch.randn(n, c, hw, hw), layer, chunk,
              args.repeats, args.loop, tdev)


def bench(name, module, x, layer, chunk, repeats, loop, tdev) -> None:
    n = len(x)
    fn, _ = rfjax.from_torch(module, x[:chunk], layer=layer)
    xs = jnp.asarray(x.numpy())
    fwd = jax.jit(fn)
    ft = timed(lambda: [fwd(xs[i:i + chunk]).block_until_ready()
                        for i in range(0, n, chunk)], repeats)[1]
    out_shape = fwd(xs[:chunk]).shape
    unit = (out_shape[2] // 2, out_shape[3] // 2)
    m = None
    for precision in ("highest", "default"):
        def run(precision=precision):
            return np.asarray(rfjax.erf(module, x, unit=unit, layer=layer, batch_size=chunk,
                                        precision=precision, progress=False).map)
        first, steady, out = timed(run, repeats)
        m = out if m is None else m
        print(f"{name:24s} rfjax {precision:8s} first {first:7.2f} s  steady {steady:7.3f} s"
              f"  {n / steady:9.0f} img/s  {steady / ft:5.1f}x forward ({ft:.3f} s)")
    module.to(tdev)
    for label, per in [("batched", False)] + ([("per-image loop", True)] if loop else []):
        first, steady, ref = timed(lambda per=per: torch_erf(module, x, unit, layer, per, tdev),
                                   1)
        diff = float(np.max(np.abs(ref - m)) / np.max(np.abs(ref)))
        print(f"{name:24s} torch {label:14s} steady {steady:7.3f} s  {n / steady:9.0f} img/s"
              f"  max diff vs rfjax (highest) {diff:.2e}")


if __name__ == "__main__":
    main()
