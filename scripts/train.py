r"""Train the CIFAR-10 classifier or the CamVid segmentation network, resumably.

The runs recorded in the README (from the project root; sources in ../shared/data)::

    python scripts/train.py cifar10 --data-dir ../shared/data --workdir /work/runs/cifar10 \
        --steps 1100 --checkpoint-every 100 --eval-every 275 --seed 0 --batch-size 128 \
        --lr 0.1 --width 32
    python scripts/train.py camvid --data-dir ../shared/data --workdir /work/runs/camvid \
        --steps 1500 --checkpoint-every 100 --eval-every 500 --seed 0 --batch-size 8 \
        --lr 0.05 --width 16 --downscale 2 --crop 80x112 --class-weights median

Re-running the same command after an interruption (even SIGKILL) resumes from the latest
complete checkpoint in WORKDIR/checkpoints and ends with the same parameters as an
uninterrupted run. The last line printed is ``params_sha256=<64 hex digits>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rfjax.train import ARCHS, TASKS, TrainConfig  # noqa: E402

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
        description=__doc__.split("\n\n")[0] + "\n\nWrites WORKDIR/config.json (the run's "
        "configuration), WORKDIR/checkpoints/<step>/ (orbax: params, batch stats, optimiser "
        "state, step), WORKDIR/metrics.jsonl (appended: loss, learning rate, images/s, test "
        "scores) and WORKDIR/final.json (final test scores and params_sha256).",
        epilog="Task defaults: cifar10 --batch-size 128 --lr 0.1 --width 32 --weight-decay "
        "5e-4;\ncamvid --batch-size 8 --lr 0.05 --width 16 --weight-decay 5e-4.\nA progress "
        "bar (loss, images/s) goes to stderr when it is a terminal;\nRFJAX_NO_PROGRESS=1 turns "
        "it off.\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]).replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
                   help="save a checkpoint every K steps and at the end (default 200)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds initialisation, data order and augmentation (default 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (default: per task, below)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of the cosine one-cycle schedule (SGD, "
                   "Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 coefficient on kernels (default: per task)")
    p.add_argument("--width", type=int, default=None,
                   help="model width: channels of the first stage (default: per task)")
    p.add_argument("--warmup", type=float, default=0.25,
                   help="fraction of the steps with increasing learning rate (default 0.25)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate on the test split every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=10,
                   help="append training loss / throughput to metrics.jsonl every N steps "
                   "(default 10)")
    p.add_argument("--crop", type=_crop, default=(128, 160),
                   help="camvid: random training crop HEIGHTxWIDTH, multiples of 8, at the "
                   "(downscaled) training resolution (default 128x160); the test split is "
                   "evaluated on whole images")
    p.add_argument("--downscale", type=int, default=1,
                   help="camvid: train and predict on images box-filtered down by this factor; "
                   "the test split is still scored at the labels' full resolution (logits "
                   "resized back; default 1)")
    p.add_argument("--class-weights", choices=("none", "median"), default="none",
                   help="camvid: loss class weighting: none (default) or median frequency "
                   "balancing")
    p.add_argument("--arch", default=None,
                   choices=sorted({a for archs in ARCHS.values() for a in archs}),
                   help="cifar10: vgg (CifarNet, default) or resnet (CifarResNet: the paper's "
                   "17 residual blocks without downsampling; --width is every layer's width); "
                   "camvid: unet (the only one)")
    p.add_argument("--max-to-keep", type=int, default=2,
                   help="checkpoints kept on disk (default 2; more to study training)")
    p.add_argument("--label-smoothing", type=float, default=0.1,
                   help="cifar10: label smoothing (default 0.1)")
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
            label_smoothing=args.label_smoothing, arch=args.arch,
            max_to_keep=args.max_to_keep, **pick)
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
