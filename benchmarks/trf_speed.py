"""Benchmark: rfjax.trf on a full-width ResNet-50 (torchvision layout) at 224x224.

Run by hand: ``python benchmarks/trf_speed.py``. Prints the time of ``rfjax.trf`` (tracing to a
jaxpr included; parameter initialisation excluded) and of one ``mask(unit)`` call, best and
median of several repeats, and the fields found. The README records the numbers.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import rfjax
from rfjax.models.zoo import ResNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    shape = (1, args.size, args.size, 3)
    model = ResNet(width=64)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    # Real arrays (not shapes) so the jaxpr holds constants, as in a user's session.
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    fn = functools.partial(model.apply, params)
    t_trf, t_mask = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        t = rfjax.trf(fn, jax.ShapeDtypeStruct(shape, jnp.float32))
        t1 = time.perf_counter()
        m = t.mask((3, 3))
        t2 = time.perf_counter()
        t_trf.append(t1 - t0)
        t_mask.append(t2 - t1)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}")
    print(f"ResNet-50 full width ({n_params / 1e6:.1f}M params), input {shape}")
    print(f"TRF: size={t.size} stride={t.stride} padding={t.padding} aligned={t.aligned}; "
          f"mask((3,3)) covers {int(m.sum())} pixels; {len(t.layers)} table rows")
    print(f"rfjax.trf (trace + analysis): best {min(t_trf):.3f} s, "
          f"median {statistics.median(t_trf):.3f} s")
    print(f"mask(unit):                   best {min(t_mask):.3f} s, "
          f"median {statistics.median(t_mask):.3f} s")


if __name__ == "__main__":
    main()
