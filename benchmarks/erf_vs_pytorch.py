"""Benchmark: rfjax.erf against the PyTorch ways of computing an ERF, on 2 CPU threads.

Run by hand (never in the tests); needs the ``bench`` extra (``pip install -e ".[bench]"``)::

    python benchmarks/erf_vs_pytorch.py              # both parts, 3 repeats, median
    python benchmarks/erf_vs_pytorch.py --json out.json

Part (a): a ReLU conv stack (10 layers, 64 channels, 3x3, SAME, no bias, He init), 64x64 RGB
inputs, 64 images, the centre unit, RepLKNet's convention (target ``relu(out[centre]).sum()``,
``relu`` of the gradient summed over channels, averaged over images). The weights are drawn
once in NumPy and loaded into both frameworks. Compared:

* ``torch loop``: the per-image loop of RepLKNet's ``erf/visualize_erf.py`` (and its copies):
  a batch-size-1 loader, for each image ``requires_grad``, ``optimizer.zero_grad()``, forward,
  the relu'd centre unit, ``torch.autograd.grad``, ``relu``, ``sum((0, 1))``, ``.numpy()``, a NaN
  check and an ``AverageMeter`` update.
* ``torch batched``: one forward of the whole batch and one ``autograd.grad`` (the cotangent is
  one-hot at every image's centre unit, times ``relu'``), per-image maps, their mean.
* ``rfjax`` with ``crop="none"`` (one batched VJP), ``"input"`` (the unit's input window),
  ``"cone"`` (each layer only on the unit's dependency cone) and ``"auto"`` (the default; picks
  the cone here), and ``method="vmap"`` (a plain jitted vmap of the per-image gradient).

Part (b): a deep stack at 224x224 (default 20 layers, 32 channels, 8 images): rfjax with and
without cropping, and torch batched for reference.

Every method is warmed up (compiled, crop verified) before timing; the repeats run
round-robin over the methods (so a load spike on a shared machine hits all of them alike) and
the median is reported ("first call" is the untimed warm-up: compilation and, for a crop, its
verification against the uncropped gradient). FLOPs are counted analytically from the
convolutions each method computes (forward plus input-gradient backward,
``2 * 2 * 9 * C_in * C_out`` per computed output position and layer: the whole image for
``none`` and torch, the input window for ``input``, every layer's cone window for ``cone``),
cross-checked against XLA's cost analysis of the uncropped gradient, and set against the
machine's measured float32 matmul rate (NumPy/OpenBLAS and XLA, 2 threads, best of 10).
Images/s, speedups and GFLOP/s use the median; on a machine shared with other work the medians
and the peak are both disturbed, so "% of peak" is approximate (it can pass 100% when a timed
run was luckier than the best matmul run).

Threads: the process is pinned to 2 CPUs (``os.sched_setaffinity``) before NumPy, JAX and
PyTorch start, so XLA:CPU's intra-op pool has 2 threads; ``XLA_FLAGS`` adds
``--xla_cpu_multi_thread_eigen=true --xla_force_host_platform_device_count=1`` (one device, the
multi-threaded Eigen path); ``torch.set_num_threads(2)``, ``torch.set_num_interop_threads(1)``;
``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=2``.
"""

from __future__ import annotations

import os

THREADS = 2
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = str(THREADS)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true"
                           " --xla_force_host_platform_device_count=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["RFJAX_NO_PROGRESS"] = "1"
if hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))[:THREADS]
    os.sched_setaffinity(0, _cpus)

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from rfjax.effective import erf  # noqa: E402
from rfjax.metrics import normalize_map  # noqa: E402

try:
    import torch
except ImportError as e:  # pragma: no cover - benchmark-only dependency
    raise SystemExit("this benchmark needs PyTorch: pip install -e .[bench] "
                     "(the 'bench' extra)") from e

torch.set_num_threads(THREADS)
torch.set_num_interop_threads(1)


# --------------------------------------------------------------------------------------------
# The network, identical in both frameworks
# --------------------------------------------------------------------------------------------


def he_weights(layers: int, channels: int, in_ch: int = 3, seed: int = 0) -> list[np.ndarray]:
    """He-initialised 3x3 kernels, HWIO float32 (``std = sqrt(2 / (9 * C_in))``)."""
    rng = np.random.default_rng(seed)
    ws, c = [], in_ch
    for _ in range(layers):
        w = rng.standard_normal((3, 3, c, channels)) * np.sqrt(2.0 / (9 * c))
        ws.append(w.astype(np.float32))
        c = channels
    return ws


def jax_apply(params, x):
    """``(N, H, W, C)`` -> ``(N, H, W, channels)``: conv 3x3 SAME + ReLU per layer."""
    for w in params:
        x = lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x)
    return x


def torch_model(ws: list[np.ndarray]) -> torch.nn.Module:
    mods = []
    for w in ws:
        conv = torch.nn.Conv2d(w.shape[2], w.shape[3], 3, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))))
        mods += [conv, torch.nn.ReLU()]
    return torch.nn.Sequential(*mods).eval()


# --------------------------------------------------------------------------------------------
# PyTorch baselines
# --------------------------------------------------------------------------------------------


class AverageMeter:
    """timm.utils.AverageMeter (what RepLKNet's script accumulates with)."""

    def __init__(self):
        self.sum, self.count, self.avg = 0.0, 0, 0.0

    def update(self, val, n=1):
        self.sum = self.sum + val * n
        self.count += n
        self.avg = self.sum / self.count


def get_input_grad(model, samples):
    """RepLKNet ``erf/visualize_erf.py``: the relu'd centre unit's gradient, one image."""
    outputs = model(samples)
    out_size = outputs.size()
    central_point = torch.nn.functional.relu(
        outputs[:, :, out_size[2] // 2, out_size[3] // 2]).sum()
    grad = torch.autograd.grad(central_point, samples)
    grad = grad[0]
    grad = torch.nn.functional.relu(grad)
    aggregated = grad.sum((0, 1))
    return aggregated.cpu().numpy()


def torch_loop(model, x_nchw: torch.Tensor) -> np.ndarray:
    """The per-image loop of the public scripts (batch size 1, AverageMeter)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0, weight_decay=0)
    meter = AverageMeter()
    optimizer.zero_grad()
    for i in range(x_nchw.shape[0]):
        samples = x_nchw[i : i + 1].clone()  # what a batch_size=1 DataLoader yields
        samples.requires_grad = True
        optimizer.zero_grad()
        contribution_scores = get_input_grad(model, samples)
        if np.isnan(np.sum(contribution_scores)):
            continue
        meter.update(contribution_scores)
    return meter.avg


def torch_batched(model, x_nchw: torch.Tensor) -> np.ndarray:
    """One forward and one backward over the whole batch; the mean of the per-image maps."""
    x = x_nchw.clone().requires_grad_(True)
    out = model(x)
    h, w = out.shape[2] // 2, out.shape[3] // 2
    (g,) = torch.autograd.grad(torch.nn.functional.relu(out[:, :, h, w]).sum(), x)
    maps = torch.nn.functional.relu(g).sum(1)  # (N, H, W)
    ok = torch.isfinite(maps).flatten(1).all(1)
    return maps[ok].mean(0).numpy()


# --------------------------------------------------------------------------------------------
# FLOPs and the machine's peak
# --------------------------------------------------------------------------------------------


def conv_flops(chans: list[tuple[int, int]], sides: list[tuple[int, int]]) -> float:
    """Forward + input-gradient FLOPs of 3x3 convs computed on ``sides[l]`` output windows."""
    return float(sum(2 * 2 * 9 * ci * co * h * w
                     for (ci, co), (h, w) in zip(chans, sides, strict=True)))


def cone_sides(layers: int, size: int, unit: int) -> list[tuple[int, int]]:
    """Per-layer output window of the centre unit's cone (3x3 stride-1 SAME stack)."""
    out = []
    for l in range(1, layers + 1):
        r = layers - l
        s = min(unit + r, size - 1) - max(unit - r, 0) + 1
        out.append((s, s))
    return out


def xla_flops(params, x) -> float | None:
    """XLA's cost-analysis FLOPs of the uncropped batched gradient (a cross-check)."""
    c = x.shape[1] // 2

    def total(xb):
        return jax.nn.relu(jax_apply(params, xb)[:, c, c, :]).sum()

    try:
        ca = jax.jit(jax.grad(total)).lower(x).compile().cost_analysis()
        if isinstance(ca, list):
            ca = ca[0]
        return float(ca["flops"])
    except Exception:  # cost analysis is best effort across jax versions
        return None


def matmul_peak(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """float32 ``n x n`` matmul GFLOP/s, NumPy (OpenBLAS) and XLA, 2 threads, best of
    ``repeats`` (a peak: the least disturbed run on a shared machine)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    a @ b
    t_np = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        t_np.append(time.perf_counter() - t0)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    f = jax.jit(jnp.dot)
    f(ja, jb).block_until_ready()
    t_jx = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(ja, jb).block_until_ready()
        t_jx.append(time.perf_counter() - t0)
    return {"numpy": flops / min(t_np) / 1e9, "xla": flops / min(t_jx) / 1e9}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_round_robin(methods: dict, repeats: int) -> tuple[dict, dict, dict, dict]:
    """Warm each method up, then ``repeats`` rounds over all methods.

    Returns the median and best times, the first-call (compile, crop verification) times and
    the results of the first calls."""
    results, first = {}, {}
    for name, f in methods.items():
        t0 = time.perf_counter()
        results[name] = f()
        first[name] = time.perf_counter() - t0
        print(f"  warm-up {name}: {first[name]:.2f} s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(repeats):
        for name, f in methods.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{repeats}: " + ", ".join(
            f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: min(v) for k, v in times.items()}, first, results)


def rfjax_method(fn, x, crop: str, method: str = "vjp"):
    def run():
        r = erf(fn, x, convention="replknet", crop=crop, method=method)
        return np.asarray(r.map.block_until_ready()), r.crop
    return run


def run_case(name: str, layers: int, channels: int, size: int, images: int, repeats: int,
             with_loop: bool, seed: int) -> dict:
    print(f"\n[{name}] {layers} layers x {channels} channels, {size}x{size}x3, "
          f"{images} images", flush=True)
    ws = he_weights(layers, channels, seed=seed)
    x = np.random.default_rng(seed + 1).standard_normal((images, size, size, 3),
                                                        dtype=np.float32)
    params = [jnp.asarray(w) for w in ws]
    fn = functools.partial(jax_apply, params)
    model = torch_model(ws)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    methods = {}
    if with_loop:
        methods["torch loop (RepLKNet script)"] = lambda: (torch_loop(model, xt), "-")
    methods["torch batched autograd"] = lambda: (torch_batched(model, xt), "-")
    if with_loop:
        methods["rfjax vmap(grad), crop none"] = rfjax_method(fn, x, "none", "vmap")
    for crop in ("none", "input", "cone", "auto"):
        methods[f"rfjax crop={crop}"] = rfjax_method(fn, x, crop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        med, best, first, res = time_round_robin(methods, repeats)
    for w in caught:  # e.g. a crop that failed verification (the "crop used" column shows it)
        print(f"  warning: {w.category.__name__}: {w.message}")

    chans = [(3, channels)] + [(channels, channels)] * (layers - 1)
    c = size // 2
    full = conv_flops(chans, [(size, size)] * layers)
    win = min(c + layers, size - 1) - max(c - layers, 0) + 1
    flops = {"none": full, "input": conv_flops(chans, [(win, win)] * layers),
             "cone": conv_flops(chans, cone_sides(layers, size, c))}
    xla = xla_flops(params, jnp.asarray(x[:1]))
    ref_loop = "torch loop (RepLKNet script)" if with_loop else None
    ref_b = "torch batched autograd"
    ref_map = normalize_map(res[ref_loop][0] if ref_loop else res[ref_b][0])
    rows = []
    for k, t in med.items():
        crop_used = res[k][1]
        kind = crop_used if crop_used in flops else "none"
        f_img = flops[kind]
        rows.append({
            "method": k, "crop": crop_used, "seconds": t, "best_s": best[k],
            "first_call_s": first[k],
            "images_per_s": images / t,
            "vs_loop": (med[ref_loop] / t) if ref_loop else None, "vs_batched": med[ref_b] / t,
            "gflop_per_image": f_img / 1e9, "gflops": f_img * images / t / 1e9,
            "max_abs_diff": float(np.max(np.abs(normalize_map(res[k][0]) - ref_map))),
        })
    return {"name": name, "layers": layers, "channels": channels, "size": size,
            "images": images, "rows": rows, "xla_full_flops_per_image": xla,
            "analytic_full_flops_per_image": full, "reference": ref_loop or ref_b}


def table(case: dict, peak: float) -> str:
    lines = [f"**{case['name']}**: {case['layers']} x conv3x3-{case['channels']} + ReLU, "
             f"{case['size']}x{case['size']}x3, {case['images']} images (max diff against "
             f"the {case['reference']}, maps normalised to peak 1)", "",
             "| method | crop used | median s | best s | images/s | vs torch loop | "
             "vs torch batched | GFLOP/image | GFLOP/s | % of peak | max abs diff | "
             "first call s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in case["rows"]:
        vs_loop = f"{r['vs_loop']:.1f}x" if r["vs_loop"] is not None else "-"
        lines.append(
            f"| {r['method']} | {r['crop']} | {r['seconds']:.3f} | {r['best_s']:.3f} | "
            f"{r['images_per_s']:.1f} | "
            f"{vs_loop} | {r['vs_batched']:.1f}x | {r['gflop_per_image']:.3f} | "
            f"{r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f}% | {r['max_abs_diff']:.1e} | "
            f"{r['first_call_s']:.1f} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    ap.add_argument("--images", type=int, default=64, help="images of part (a)")
    ap.add_argument("--deep-layers", type=int, default=20)
    ap.add_argument("--deep-channels", type=int, default=32)
    ap.add_argument("--deep-images", type=int, default=8)
    ap.add_argument("--skip-deep", action="store_true", help="part (a) only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the numbers to this path")
    args = ap.parse_args()

    print(f"CPU: {cpu_name()}; affinity {sorted(os.sched_getaffinity(0))}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax "
          f"{jax.__version__} ({jax.devices()[0].platform}, {jax.device_count()} device); "
          f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    peak = matmul_peak()
    print(f"float32 2048^3 matmul, 2 threads, best of 10: NumPy {peak['numpy']:.1f} GFLOP/s, "
          f"XLA {peak['xla']:.1f} GFLOP/s", flush=True)
    best = max(peak.values())
    cases = [run_case("(a) 64x64", 10, 64, 64, args.images, args.repeats, True, args.seed)]
    if not args.skip_deep:
        cases.append(run_case("(b) 224x224", args.deep_layers, args.deep_channels, 224,
                              args.deep_images, args.repeats, False, args.seed))

    print(f"\nCPU: {cpu_name()}, {THREADS} threads; matmul peak {best:.1f} GFLOP/s "
          f"(NumPy {peak['numpy']:.1f}, XLA {peak['xla']:.1f}); load average now "
          f"{os.getloadavg()[0]:.1f}\n")
    for case in cases:
        print(table(case, best))
        xla = case["xla_full_flops_per_image"]
        if xla:
            print(f"\nXLA cost analysis of the uncropped gradient: {xla / 1e9:.3f} GFLOP/image "
                  f"(analytic conv count {case['analytic_full_flops_per_image'] / 1e9:.3f})\n")
    a = {r["method"]: r for r in cases[0]["rows"]}
    auto = a["rfjax crop=auto"]
    print("Goals:")
    print(f"  (a) rfjax (auto) >= 10x the per-image loop: {auto['vs_loop']:.1f}x -> "
          f"{'met' if auto['vs_loop'] >= 10 else 'NOT met'}")
    print(f"  (a) rfjax (auto) >= 5x torch batched:       {auto['vs_batched']:.1f}x -> "
          f"{'met' if auto['vs_batched'] >= 5 else 'NOT met'}")
    if len(cases) > 1:
        b = {r["method"]: r for r in cases[1]["rows"]}
        gain = b["rfjax crop=none"]["seconds"] / b["rfjax crop=cone"]["seconds"]
        print(f"  (b) cone cropping >= 10x at 224:            {gain:.1f}x -> "
              f"{'met' if gain >= 10 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "threads": THREADS, "peak_gflops": peak,
                       "cases": cases}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
