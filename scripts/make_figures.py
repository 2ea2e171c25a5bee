"""Regenerate every comparison of the source notes (Luo et al., NIPS 2016): figures + verdicts.

Writes OUT/NAME.png for each experiment and OUT/results.json, one entry per experiment:
{"claim", "measured", "paper", "criterion", "holds"}; ``holds`` is computed from ``measured``
by the stated criterion. With --only, the other entries of an existing results.json are kept.

Examples (from the project root)::

    python scripts/make_figures.py --quick                 # every figure, briefly
    python scripts/make_figures.py                         # the full run (paper_figures/)
    python scripts/make_figures.py --only erf_growth,training --checkpoints /work/runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rfjax.experiments import EXPERIMENTS, NAMES


def _names(values: list[str] | None) -> list[str]:
    if not values:
        return list(NAMES)
    out: list[str] = []
    for v in values:
        for name in (s.strip() for s in v.split(",")):
            if not name:
                continue
            if name not in EXPERIMENTS:
                raise SystemExit(f"make_figures.py: error: unknown experiment {name!r}; "
                                 f"choose from {', '.join(NAMES)}")
            if name not in out:
                out.append(name)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/make_figures.py",
        description=__doc__ + "\nExperiments: " + ", ".join(NAMES) + ".",
        epilog="A progress bar per experiment on stderr when it is a terminal "
        "(RFJAX_NO_PROGRESS=1 turns them off). The same --seed gives the same numbers.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer weight draws, images and training steps (under 10 minutes on "
                   "a 2-core CPU); default: the full run")
    p.add_argument("--only", action="append", metavar="NAME[,NAME...]",
                   help="run only these experiments (repeatable or comma-separated)")
    p.add_argument("--out", default="paper_figures",
                   help="output folder (default: paper_figures)")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10/CamVid source folder (default: $RFJAX_DATA_DIR, else "
                   "../shared/data)")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder with trained cifar10/ and camvid/ workdirs of "
                   "scripts/train.py for the 'training' figure; without it the figure trains "
                   "both models itself (briefly with --quick)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every experiment (default: 0)")
    args = p.parse_args(argv)
    args.names = _names(args.only)
    if args.checkpoints is not None and not Path(args.checkpoints).is_dir():
        p.error(f"--checkpoints {args.checkpoints}: no such folder")
    if args.seed < 0:
        p.error("--seed must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # figures are only written to files, never shown
    from rfjax import plot
    from rfjax.experiments import make_config, merge_results
    from rfjax.progress import progress

    mode = "quick" if args.quick else "full"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for name in args.names:
        overrides = {}
        if name == "training":
            overrides = {"data_dir": args.data_dir, "checkpoints": args.checkpoints}
        cfg = make_config(name, mode, **overrides)
        t0 = time.perf_counter()
        with progress(cfg.work, desc=name, dynamic_ncols=True) as bar:
            result = EXPERIMENTS[name].run(cfg, args.seed, bar)
        plot.save(plot.paper_figure(result), out / f"{name}.png")
        merge_results(out / "results.json", [result])
        dt = time.perf_counter() - t0
        rows.append((name, result["holds"], dt))
        print(f"{name:22s} holds={str(result['holds']):5s} {dt:7.1f} s  -> {out / name}.png",
              flush=True)
    total = time.perf_counter() - t_all
    n_ok = sum(r[1] for r in rows)
    print(f"{n_ok}/{len(rows)} claims hold ({mode} run, seed {args.seed}, {total:.0f} s); "
          f"results in {out / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
