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
import dataclasses
import sys

from rfjax.train import ARCHS, CLASS_WEIGHTS, TASK_DEFAULTS, TASKS, TrainConfig

#: TrainConfig's field defaults: the command-line defaults (``None``: the task's, see
#: ``TASK_DEFAULTS``). Nothing here restates a default.
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.default is not dataclasses.MISSING}


def _crop(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH, e.g. 128x160, got {text!r}") from None
    return h, w


def make_parser() -> argparse.ArgumentParser:
    """The command line; every default of a TrainConfig field is that field's default."""
    task_defaults = ";\n".join(
        f"{task} " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
        for task, values in TASK_DEFAULTS.items())
    p = argparse.ArgumentParser(
        prog="scripts/train.py",
        description=__doc__.split("\n\n")[0] + "\n\nWrites WORKDIR/config.json (the run's "
        "configuration), WORKDIR/checkpoints/<step>/ (orbax: params, batch stats, optimiser "
        "state, step), WORKDIR/metrics.jsonl (appended: loss, learning rate, images/s, test "
        "scores) and WORKDIR/final.json (final test scores and params_sha256).",
        epilog=f"Task defaults: {task_defaults}.\nA progress "
        "bar (loss, images/s) goes to stderr when it is a terminal;\nRFJAX_NO_PROGRESS=1 turns "
        "it off.\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]).replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = DEFAULTS
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
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"],
                   help="save a checkpoint every K steps and at the end (default "
                   f"{d['checkpoint_every']})")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help=f"seeds initialisation, data order and augmentation (default "
                   f"{d['seed']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="training batch size (default: per task, below)")
    p.add_argument("--lr", type=float, default=d["lr"],
                   help="peak learning rate of the cosine one-cycle schedule (SGD, "
                   "Nesterov momentum 0.9; default: per task, below)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help=f"L2 coefficient on kernels (default {d['weight_decay']:g})")
    p.add_argument("--width", type=int, default=d["width"],
                   help="model width: channels of the first stage (default: per task, below)")
    p.add_argument("--warmup", type=float, default=d["warmup"],
                   help="fraction of the steps with increasing learning rate (default "
                   f"{d['warmup']})")
    p.add_argument("--eval-every", type=int, default=d["eval_every"],
                   help="evaluate on the test split every N steps (0: only at the end; "
                   f"default {d['eval_every']})")
    p.add_argument("--log-every", type=int, default=d["log_every"],
                   help="append training loss / throughput to metrics.jsonl every N steps "
                   f"(default {d['log_every']})")
    p.add_argument("--crop", type=_crop, default=d["crop"],
                   help="camvid: random training crop HEIGHTxWIDTH, multiples of 8, at the "
                   "(downscaled) training resolution (default {}x{}); the test split is "
                   "evaluated on whole images".format(*d["crop"]))
    p.add_argument("--downscale", type=int, default=d["downscale"],
                   help="camvid: train and predict on images box-filtered down by this factor; "
                   "the test split is still scored at the labels' full resolution (logits "
                   f"resized back; default {d['downscale']})")
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=d["class_weights"],
                   help="camvid: loss class weighting: none or median frequency balancing "
                   f"(default {d['class_weights']})")
    p.add_argument("--arch", default=d["arch"],
                   choices=sorted({a for archs in ARCHS.values() for a in archs}),
                   help="cifar10: vgg (CifarNet, default) or resnet (CifarResNet: the paper's "
                   "17 residual blocks without downsampling; --width is every layer's width); "
                   "camvid: unet (the only one)")
    p.add_argument("--max-to-keep", type=int, default=d["max_to_keep"],
                   help=f"checkpoints kept on disk (default {d['max_to_keep']}; more to study "
                   "training)")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"],
                   help=f"cifar10: label smoothing (default {d['label_smoothing']})")
    # Test hook: sleep after every step so that a test can kill the run mid-way.
    p.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the parsed options (every option named like a field sets it)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
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
