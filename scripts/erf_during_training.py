"""Follow the ERF of a training run through its checkpoints: size per step, first/last maps.

Reads a workdir of scripts/train.py, measures the ERF (mean |dy/dx| over test images) of the
unit of the paper's Fig. 5 (CIFAR-10: the centre unit of the last feature map; CamVid: the
centre pixel of the logits) at the run's initialisation and at every kept checkpoint, and
writes a figure (OUT.png) and the numbers (OUT.json). Train with a larger --max-to-keep to
keep more checkpoints. Example (from the project root; the run recorded in the README)::

    python scripts/train.py cifar10 --arch resnet --data-dir ../shared/data \\
        --workdir /work/runs_resnet/cifar10 --steps 1500 --checkpoint-every 150 \\
        --max-to-keep 11 --eval-every 500 --seed 0 --batch-size 64 --lr 0.05 --width 16
    python scripts/erf_during_training.py /work/runs_resnet/cifar10 --data-dir ../shared/data \\
        --out paper_figures/erf_during_training_cifar_resnet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/erf_during_training.py", description=__doc__,
        epilog="A progress bar on stderr when it is a terminal (RFJAX_NO_PROGRESS=1 turns it "
        "off).", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir", help="a training workdir (config.json, checkpoints/)")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10/CamVid source folder (default: $RFJAX_DATA_DIR, else "
                   "../shared/data)")
    p.add_argument("--images", type=int, default=64,
                   help="test images averaged into each ERF (default 64)")
    p.add_argument("--out", default="erf_during_training",
                   help="output path without extension: OUT.png and OUT.json "
                   "(default: ./erf_during_training)")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error("--images must be >= 1")
    if not Path(args.workdir).is_dir():
        p.error(f"workdir {args.workdir}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # figures are only written to files, never shown
    from rfjax import plot
    from rfjax import train as rtrain
    from rfjax.experiments import erf_along_training
    from rfjax.experiments.common import jsonable
    from rfjax.progress import progress

    total = 1 + len(rtrain.checkpoint_steps(args.workdir))
    try:
        with progress(total, desc="ERF per checkpoint") as bar:
            data = erf_along_training(args.workdir, data_dir=args.data_dir,
                                      erf_images=args.images, progress=bar)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot.save(plot.fig_erf_along_training(data), out.with_suffix(".png"))
    record = {k: v for k, v in data.items() if k not in ("maps", "image")}
    out.with_suffix(".json").write_text(json.dumps(jsonable(record), indent=1) + "\n")
    for step, size, thr in zip(data["steps"], data["size"], data["threshold_hw"], strict=True):
        print(f"step {step:6d}  ERF 4-sigma {size:6.1f} px  threshold {thr[0]:.0f}x{thr[1]:.0f}")
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
