"""The receptive-field atlas: run rfjax.atlas over its table of architectures.

    python scripts/atlas.py                       # every entry, real settings, into atlas/
    python scripts/atlas.py --only resnet50 timm/vit_tiny_patch16_224
    python scripts/atlas.py --family resnet --quick
    python scripts/atlas.py --report-only         # regenerate atlas.json, README.md, figures

One JSON per model in ``<out>/records/<name>.json`` (``/`` in a name becomes ``__``):
finished models are skipped unless ``--force``, so an interrupted run resumes. Then
``<out>/atlas.json`` (every record, the versions and the date), ``<out>/README.md`` (the
table) and the figures (``erf_trf_ratio.png``, ``gallery.png``) are regenerated from the
records.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

from rfjax import atlas, atlas_report  # noqa: E402

QUICK = {"resolution": 64, "erf_images": 2, "weight_draws": 1}
REAL = {"resolution": None, "erf_images": 8, "weight_draws": 3}


class ModelTimeout(BaseException):
    """A model ran past ``--timeout`` (a BaseException: the record's handlers let it through)."""


def record_path(out: str, name: str) -> str:
    return os.path.join(out, "records", name.replace("/", "__") + ".json")


def select(args) -> list[atlas.Entry]:
    es = atlas.entries()
    if args.only:
        known = {e.name for e in es}
        bad = [n for n in args.only if n not in known]
        if bad:
            sys.exit(f"unknown atlas entries: {bad}")
        es = [e for e in es if e.name in args.only]
    if args.family:
        es = [e for e in es if e.family == args.family or e.framework == args.family]
    return es


def breadth_first(es: list[atlas.Entry]) -> list[atlas.Entry]:
    """Run order that covers the table's breadth first: the gallery and cross-checked models,
    then the first entry of each (framework, family), then the rest (table order within)."""
    seen: set = set()
    firsts = set()
    for e in es:
        if (e.framework, e.family) not in seen:
            seen.add((e.framework, e.family))
            firsts.add(e.name)

    def rank(e):
        if e.framework == "rfjax" or e.name in atlas.GALLERY or e.name in atlas.REFERENCE:
            return 0
        return 1 if e.name in firsts else 2

    return sorted(es, key=rank)


def run_one(entry: atlas.Entry, args, settings: dict) -> dict:
    keep = entry.name in atlas.GALLERY

    def alarm(signum, frame):
        raise ModelTimeout(f"ran past {args.timeout} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(args.timeout))
    try:
        rec = atlas.atlas_record(entry, erf_images=settings["erf_images"],
                                 weight_draws=settings["weight_draws"],
                                 check_oracle=not args.no_oracle,
                                 resolution=settings["resolution"], keep_maps=keep)
    except ModelTimeout as e:
        rec = {"name": entry.name, "family": entry.family, "framework": entry.framework,
               "resolution": entry.resolution, "stages": [], "erf": None, "oracle": None,
               "errors": [{"phase": "run", "type": "Timeout", "message": str(e), "where": ""}],
               "status": "failed", "seconds": float(args.timeout)}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    rec["settings"] = {k: v for k, v in settings.items() if k != "resolution"}
    maps = rec.pop("_maps", None)
    if maps is not None:
        arrays = {"trf_mask": np.asarray(maps["trf_mask"], bool)}
        if maps.get("erf_map") is not None:
            arrays["erf_map"] = np.asarray(maps["erf_map"], np.float32)
        np.savez_compressed(record_path(args.out, entry.name)[:-5] + ".npz", **arrays)
    return rec


def load_records(out: str) -> list[dict]:
    order = {e.name: i for i, e in enumerate(atlas.entries())}
    recs = []
    folder = os.path.join(out, "records")
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.endswith(".json"):
                with open(os.path.join(folder, f)) as fh:
                    recs.append(json.load(fh))
    return sorted(recs, key=lambda r: order.get(r["name"], len(order)))


def report(args, settings: dict, run_info: dict) -> None:
    """atlas.json, README.md and the figures, from every record on disk."""
    recs = load_records(args.out)
    meta_path = os.path.join(args.out, "atlas.json")
    old = {}
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            old = json.load(fh).get("meta", {})
    runs = old.get("runs", []) + ([run_info] if run_info else [])
    meta = {"versions": atlas.versions(), "erf_images": settings["erf_images"],
            "weight_draws": settings["weight_draws"],
            "images": "random normal N(0, 1), seed 0 (not real images)",
            "runs": runs,
            "sum_of_record_seconds": round(sum(r.get("seconds", 0.0) for r in recs), 1)}
    with open(meta_path, "w") as fh:
        json.dump({"meta": meta, "records": recs}, fh, indent=1)
    total = len(atlas.entries())
    missing = [e.name for e in atlas.entries() if not os.path.exists(
        record_path(args.out, e.name))]
    notes = (f"Run time: {meta['sum_of_record_seconds'] / 60:.0f} min of model time "
             "(the sum of the records' `seconds`) on a shared 2-core CPU machine; "
             f"{len(runs)} invocation(s) are logged in `atlas.json` (`meta.runs`).")
    if missing:
        notes += (f"\n\n**Not run yet ({len(missing)}):** "
                  + ", ".join(f"`{n}`" for n in missing)
                  + ". Finish with `PYTHONPATH=. python scripts/atlas.py` (finished records "
                  "are skipped).")
    with open(os.path.join(args.out, "README.md"), "w") as fh:
        fh.write(atlas_report.markdown(recs, meta, total=total, notes=notes))
    if args.no_figures:
        return
    import matplotlib

    matplotlib.use("Agg")
    from rfjax import plot

    plot.save(plot.fig_atlas_ratio(recs), os.path.join(args.out, "erf_trf_ratio.png"))
    items = []
    for name in atlas.GALLERY:
        p = record_path(args.out, name)[:-5] + ".npz"
        if os.path.exists(p):
            z = np.load(p)
            items.append((name, z["trf_mask"], z["erf_map"] if "erf_map" in z else None))
    if items:
        plot.save(plot.fig_atlas_gallery(items), os.path.join(args.out, "gallery.png"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="atlas", help="output folder (default atlas/)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="these entries only")
    ap.add_argument("--family", help="entries of this family (or framework) only")
    ap.add_argument("--quick", action="store_true",
                    help="64 px (fixed-resolution models keep theirs), 2 images, 1 draw")
    ap.add_argument("--force", action="store_true", help="recompute finished records")
    ap.add_argument("--images", type=int, help="ERF images per draw (default 8; quick 2)")
    ap.add_argument("--draws", type=int, help="weight draws (default 3; quick 1)")
    ap.add_argument("--no-oracle", action="store_true", help="skip the oracle check")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model")
    ap.add_argument("--report-only", action="store_true",
                    help="only regenerate atlas.json, README.md and the figures")
    ap.add_argument("--no-figures", action="store_true", help="no PNG figures")
    args = ap.parse_args(argv)
    settings = dict(QUICK if args.quick else REAL)
    if args.images is not None:
        settings["erf_images"] = args.images
    if args.draws is not None:
        settings["weight_draws"] = args.draws
    os.makedirs(os.path.join(args.out, "records"), exist_ok=True)
    run_info = {}
    if not args.report_only:
        from tqdm import tqdm

        todo = [e for e in breadth_first(select(args))
                if args.force or not os.path.exists(record_path(args.out, e.name))]
        start = time.time()
        warnings.filterwarnings("ignore")
        bar = tqdm(todo, desc="atlas", unit="model")
        for e in bar:
            bar.set_postfix_str(e.name)
            rec = run_one(e, args, settings)
            with open(record_path(args.out, e.name), "w") as fh:
                json.dump(rec, fh, indent=1)
            tqdm.write(f"{e.name}: {rec['status']} in {rec['seconds']:.0f} s"
                       + (f" ({rec['errors'][0]['type']})" if rec["errors"] else ""))
        run_info = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start)),
                    "seconds": round(time.time() - start, 1), "models": len(todo),
                    "command": " ".join(["python", "scripts/atlas.py", *(argv or sys.argv[1:])]),
                    **{k: v for k, v in settings.items() if k != "resolution"},
                    "quick": args.quick}
    report(args, settings, run_info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
