"""Train the CIFAR-10 classifier or the CamVid segmentation network, resumably.

Examples (from the project root; the data sources are in ../shared/data)::

    python scripts/train.py cifar10 --data-dir ../shared/data --workdir /work/runs/cifar10 \\
        --steps 2200 --checkpoint-every 200 --seed 0 --batch-size 128 --lr 0.1
    python scripts/train.py camvid --data-dir ../shared/data --workdir /work/runs/camvid \\
        --steps 1500 --checkpoint-every 100 --seed 0 --batch-size 8 --lr 0.05

Re-running the same command after an interruption (even SIGKILL) resumes from the latest
complete checkpoint in WORKDIR/checkpoints and ends with the same parameters as an
uninterrupted run. The last line printed is ``params_sha256=<64 hex digits>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rfjax.train import TASKS, TrainConfig  # noqa: E402

_DEFAULTS = {
    "cifar10": {"batch_size": 128, "lr": 0.1, "width": 32, "weight_decay": 5e-4},
    "camvid": {"batch_size": 8, "lr": 0.05, "width": 16, "weight_decay": 5e-4},
}


def _crop(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH, e.g. 128x160, got {text!r}") from None
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/train.py",
        description=__doc__.split("\n\n")[0] + " Metrics go to WORKDIR/metrics.jsonl, the "
        "configuration to WORKDIR/config.json, checkpoints (orbax) to WORKDIR/checkpoints, the "
        "final evaluation to WORKDIR/final.json.",
        epilog="Task defaults: cifar10 --batch-size 128 --lr 0.1 --width 32; camvid "
        "--batch-size 8 --lr 0.05 --width 16 --crop 128x160. Progress bar on stderr when it is "
        "a terminal (RFJAX_NO_PROGRESS=1 turns it off).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("task", choices=TASKS, help="dataset / model to train")
    p.add_argument("--data-dir", default=None,
                   help="source data folder holding cifar10/ and camvid/ (default: "
                   "$RFJAX_DATA_DIR, else ../shared/data)")
    p.add_argument("--prepared-dir", default=None,
                   help="folder for the prepared TFDS datasets (default: $RFJAX_TFDS_DIR, else "
                   "~/.cache/rfjax/tensorflow_datasets)")
    p.add_argument("--workdir", required=True,
                   help="output folder (made absolute); re-use it to resume a run")
    p.add_argument("--steps", type=int, required=True, help="optimiser steps in total")
    p.add_argument("--checkpoint-every", type=int, default=200,
                   help="save a checkpoint every K steps (and at the end)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds initialisation, data order and augmentation")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (SGD + Nesterov momentum, cosine one-cycle)")
    p.add_argument("--weight-decay", type=float, default=None, help="L2 on kernels")
    p.add_argument("--width", type=int, default=None, help="channels of the first stage")
    p.add_argument("--warmup", type=float, default=0.25,
                   help="fraction of the steps with increasing learning rate")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate on the test split every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=10,
                   help="append training loss / throughput to metrics.jsonl every N steps")
    p.add_argument("--crop", type=_crop, default=(128, 160),
                   help="camvid: random training crop HEIGHTxWIDTH (multiples of 8); the "
                   "test split is evaluated at its full resolution")
    p.add_argument("--downscale", type=int, default=1,
                   help="camvid: train and predict on images box-filtered down by this factor; "
                   "the test split is still scored at the labels' full resolution (logits "
                   "resized back)")
    p.add_argument("--class-weights", choices=("none", "median"), default="none",
                   help="camvid: loss class weighting (median frequency balancing)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="cifar10: label smoothing")
    # Test hook: sleep after every step so that a test can kill the run mid-way.
    p.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    defaults = _DEFAULTS[args.task]
    pick = {k: (getattr(args, k) if getattr(args, k) is not None else v)
            for k, v in defaults.items()}
    try:
        config = TrainConfig(
            task=args.task, steps=args.steps, seed=args.seed,
            checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
            log_every=args.log_every, warmup=args.warmup, crop=args.crop,
            class_weights=args.class_weights, downscale=args.downscale,
            label_smoothing=args.label_smoothing, **pick)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rfjax.train import train

    result = train(config, args.workdir, data_dir=args.data_dir,
                   prepared_dir=args.prepared_dir, step_delay=args.step_delay)
    print(f"params_sha256={result['params_sha256']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
