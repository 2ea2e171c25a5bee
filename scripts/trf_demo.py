"""TRF demo: the exact theoretical receptive field of the model zoo, by rfjax.trf.

Runs ``rfjax.trf`` on every model of ``rfjax.models.zoo.examples()`` and prints the closed form
(size / stride / padding per axis), whether the network is aligned, global axes, and the exact
mask size of the centre unit; ``--table NAME`` prints one model's per-layer table. The field is
structural, so the parameters are abstract (``jax.eval_shape`` of ``model.init``): nothing is
initialised or compiled, and the whole zoo takes seconds.

A stride ``-`` marks an axis that is not aligned: no single stride fits every unit (U-Nets,
transposed convolutions, token axes); ``size`` is then the largest per-unit extent and
``padding`` minus unit 0's start, and ``TRF.region(unit)`` / ``TRF.mask(unit)`` are exact per
unit. A global axis has stride 0 and the input's extent as size.

    python scripts/trf_demo.py
    python scripts/trf_demo.py --table vgg16
"""

from __future__ import annotations

import argparse
import functools
import time

import jax

import rfjax
from rfjax.models import zoo


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", metavar="NAME", choices=sorted(zoo.examples()),
                    help="print the per-layer table of this model")
    args = ap.parse_args(argv)
    models = zoo.examples()
    names = [args.table] if args.table else sorted(models)
    print(f"{'model':<20}{'input':<18}{'output':<14}{'size':<16}{'stride':<12}"
          f"{'padding':<14}{'aligned':<9}{'global':<8}{'centre mask':<12}{'time':>6}")
    for name in names:
        model, shape = models[name]
        spec = jax.ShapeDtypeStruct(shape, "float32")
        t0 = time.perf_counter()
        params = jax.eval_shape(model.init, jax.random.key(0), spec)
        # ViT(all_layers=True) returns one array per layer: report the last one.
        last = isinstance(model, zoo.ViT) and model.all_layers
        t = rfjax.trf(functools.partial(model.apply, params), spec,
                      output=-1 if last else None)
        centre = tuple(n // 2 for n in t.output_shape)
        msum = int(t.mask(centre).sum()) if t.output_shape else int(t.is_global[0])
        dt = time.perf_counter() - t0
        print(f"{name:<20}{'x'.join(map(str, shape)):<18}"
              f"{'x'.join(map(str, t.output_shape)) or '-':<14}{str(t.size):<16}"
              f"{','.join(t.stride_text):<12}{str(t.padding):<14}{str(t.aligned):<9}"
              f"{str(any(t.is_global)):<8}{msum:<12}{dt:>5.2f}s")
        if args.table:
            print()
            print(t.table())
    print('stride "-": the axis is not aligned (no single stride fits every unit; see '
          "TRF.region / TRF.mask); time: parameters (abstract) and rfjax.trf")


if __name__ == "__main__":
    main()
