"""Benchmark: rfjax.trf on full-width ImageNet models at 224x224: ResNet-50, DenseNet-121, Swin-T.

Run by hand: ``python benchmarks/trf_speed.py`` (``--models resnet50 densenet121 swin_t``,
``--repeats``, ``--size``). Per model (torchvision layouts, full width, batch 1), best and
median of ``--repeats`` runs of:

- ``jax.make_jaxpr`` alone (the bare trace, the floor for any jaxpr-reading engine), of a
  fresh ``functools.partial`` each run (``make_jaxpr`` caches per function object; only
  jax's own inner ``jit``s, e.g. ``jnp.roll``'s, stay cached, as in a user's session);
- ``rfjax.trf`` (tracing to a jaxpr included), and its ratio to the bare trace;
- one ``mask(unit)`` call at the centre unit.

It also prints the size of the jaxpr (equations at the top level, and counting every
sub-jaxpr recursively, e.g. the ``jit`` of ``jnp.roll`` in Swin), the fields found and the
load average. Parameter initialisation is excluded: the parameters are zeros of the right
shapes (real arrays, so the jaxpr holds constants as in a user's session). The README records
the numbers.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp

import rfjax
from rfjax.models.zoo import DenseNet, ResNet, SwinTransformer

MODELS: dict[str, tuple[str, Callable[[], object]]] = {
    "resnet50": ("ResNet-50", lambda: ResNet(width=64)),
    "densenet121": ("DenseNet-121", lambda: DenseNet()),
    "swin_t": ("Swin-T", lambda: SwinTransformer()),
}


def count_equations(jaxpr, recursive: bool) -> int:
    """Equations of a jaxpr; ``recursive`` adds those of every sub-jaxpr (jit, custom_jvp...)."""
    n = len(jaxpr.eqns)
    if recursive:
        for eqn in jaxpr.eqns:
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                n += count_equations(sub, True)
    return n


def _stats(ts: list[float]) -> str:
    return f"best {min(ts):7.3f} s, median {statistics.median(ts):7.3f} s"


def bench(name: str, size: int, repeats: int) -> None:
    title, make = MODELS[name]
    model = make()
    shape = (1, size, size, 3)
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), spec)
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
    t_trace, t_trf, t_mask = [], [], []
    for _ in range(repeats):
        # A fresh function each time: make_jaxpr caches its trace per function object.
        fn = functools.partial(model.apply, variables)
        t0 = time.perf_counter()
        closed = jax.make_jaxpr(fn)(spec)
        t1 = time.perf_counter()
        t = rfjax.trf(fn, spec)
        t2 = time.perf_counter()
        m = t.mask(tuple(n // 2 for n in t.output_shape))
        t3 = time.perf_counter()
        t_trace.append(t1 - t0)
        t_trf.append(t2 - t1)
        t_mask.append(t3 - t2)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    top, rec = count_equations(closed.jaxpr, False), count_equations(closed.jaxpr, True)
    print(f"{title} full width ({n_params / 1e6:.1f}M params), input {shape}, "
          f"output {'x'.join(map(str, t.output_shape))}")
    print(f"  TRF: size={t.size} stride={tuple(map(str, t.stride))} padding={t.padding} "
          f"aligned={t.aligned} global={t.is_global}; centre mask {int(m.sum())} pixels")
    print(f"  jaxpr: {top} equations at the top level, {rec} counting sub-jaxprs recursively")
    print(f"  make_jaxpr alone:            {_stats(t_trace)}")
    print(f"  rfjax.trf (trace included):  {_stats(t_trf)}")
    print(f"  ratio rfjax.trf / bare trace: best/best {min(t_trf) / min(t_trace):.1f}x, "
          f"median/median {statistics.median(t_trf) / statistics.median(t_trace):.1f}x")
    print(f"  mask(centre unit):           {_stats(t_mask)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in args.models:
        bench(name, args.size, args.repeats)


if __name__ == "__main__":
    main()
