"""The atlas as Markdown: the table that ``atlas/README.md`` renders on GitHub, with the
cross-check against google-research/receptive_field (:data:`rfjax.atlas.REFERENCE`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rfjax.atlas import REFERENCE


def _axes(v: Any) -> str:
    """``[a, a]`` -> ``a``; ``[a, b]`` -> ``a×b``; ``None`` entries -> ``-``."""
    if v is None:
        return "-"
    vals = ["-" if x is None else (f"{x:g}" if isinstance(x, float) else str(x)) for x in v]
    return vals[0] if len(set(vals)) == 1 else "×".join(vals)


def _stage_text(s: dict) -> str:
    if "error" in s:
        return f"{s['layer']}: ✗"
    if all(s["is_global"]):
        return "G"
    return f"{_axes(s['size'])}/{_axes(s['stride'])}"


def record_row(r: dict) -> list[str]:
    """One Markdown table row of a record."""
    ok = [s for s in r.get("stages", []) if "error" not in s]
    last = ok[-1] if ok else None
    erf = r.get("erf") or {}
    orc = r.get("oracle") or {}
    err = "; ".join(f"{e['phase']}: {e['type']}: {e['message'][:90]}"
                    for e in r.get("errors", []))
    oracle = "✓" if orc.get("ok") is True else "✗" if orc.get("ok") is False else "n/a"
    trf_time = sum(s.get("trf_seconds", 0.0) for s in ok)
    remedy = " (c0)" if erf.get("channels") is not None else ""
    return [
        f"`{r['name']}`", r["family"], str(r.get("resolution", "")),
        " · ".join(_stage_text(s) for s in r.get("stages", [])) or "-",
        "-" if last is None else ("✓" if last["aligned"] else "✗"),
        "-" if last is None else _axes(["G" if g else "·" for g in last["is_global"]]),
        "-" if last is None else ("✓" if last["rectangular"] else "✗"),
        _axes([round(v) for v in erf["size_4sigma"]]) + remedy if erf else "-",
        _axes([round(v, 2) for v in erf["erf_trf_ratio"]]) if erf else "-",
        f"{trf_time:.1f}" if ok else "-", oracle, err.replace("|", "\\|") or "",
    ]


_HEAD = ["model", "family", "res", "stage TRF size/stride (G: global)", "aligned", "global",
         "rect.", "ERF 4σ", "ERF/TRF", "trf s", "oracle", "error"]


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def reference_rows(records: Sequence[dict]) -> list[list[str]]:
    """Side by side with google-research/receptive_field (:data:`REFERENCE`)."""
    by = {r["name"]: r for r in records}
    rows = []
    for name, (theirs, rf, st, pad) in REFERENCE.items():
        r = by.get(name)
        ok = [s for s in (r or {}).get("stages", []) if "error" not in s]
        if not ok:
            ours = ["not run" if r is None else "failed", "", ""]
            res = "" if r is None else str(r.get("resolution"))
            layer = ""
        else:
            s = ok[-1]
            ours = [_axes(s["size"]), _axes(s["stride"]), _axes(s["padding"])]
            res, layer = str(r["resolution"]), s["layer"]
        rows.append([f"`{name}`", f"`{layer}`", res, *ours, theirs, str(rf), str(st), str(pad)])
    return rows


def markdown(records: Sequence[dict], meta: dict, *, total: int, notes: str = "") -> str:
    """``atlas/README.md``: the versions, the table of every record, the failures grouped by
    error type, and the cross-check against google-research/receptive_field."""
    v = meta.get("versions", {})
    n_ok = sum(r["status"] == "ok" for r in records)
    n_fail = sum(r["status"] == "failed" for r in records)
    n_part = sum(r["status"] == "partial" for r in records)
    orc = [r["oracle"]["ok"] for r in records if (r.get("oracle") or {}).get("checked")]
    lines = [
        "# The receptive-field atlas",
        "",
        f"Generated {v.get('date', '?')} by `python scripts/atlas.py` with rfjax "
        f"{v.get('rfjax')}, jax {v.get('jax')}, torch {v.get('torch')}, torchvision "
        f"{v.get('torchvision')}, timm {v.get('timm')}, keras {v.get('keras')} "
        f"(JAX backend), flax {v.get('flax')}.",
        "",
        f"**{len(records)} of {total} architectures** in the table have a record: {n_ok} ok, "
        f"{n_part} partial (some part failed), {n_fail} failed. Oracle checks: "
        f"{sum(orc)} ✓ of {len(orc)} PyTorch models checked.",
        "",
    ]
    if notes:
        lines += [notes, ""]
    lines += [
        "Every row is one architecture at its native resolution, with freshly initialised "
        "weights (nothing is downloaded). Columns:",
        "",
        "- *stage TRF size/stride*: the exact theoretical receptive field of each stage output "
        "(`rfjax.trf(model, x, layer=stage)`), `size/stride` in input pixels (one number when "
        "both axes agree, `h×w` otherwise; stride `-` where no single jump fits every unit); "
        "`G`: the field covers the whole input at every unit (attention, SE gates, image "
        "pooling). The stage names are in `records/<name>.json`.",
        "- *aligned*, *global*, *rect.*: of the last stage: one closed form fits every unit; "
        "global per axis; the centre unit's exact mask equals its bounding box.",
        "- *ERF 4σ*: the Gaussian 4-sigma size (`rfjax.metrics.erf_size`) of the last "
        "stage's centre-unit ERF at initialisation, the mean of "
        f"{meta.get('weight_draws', '?')} weight draws (seeds 0..) of the per-draw maps "
        f"normalised to sum 1, each over {meta.get('erf_images', '?')} random-normal "
        "images (N(0, 1), not real images). `(c0)`: the channel sum's ERF is noise (a final "
        "LayerNorm makes it constant), so channel 0 alone is used.",
        "- *ERF/TRF*: `rfjax.metrics.erf_trf_ratio` per axis (a global TRF counts as the "
        "input's extent).",
        "- *trf s*: seconds `rfjax.trf` took, summed over the stages (the `torch.export` of "
        "each stage included).",
        "- *oracle*: PyTorch models: the centre unit's TRF mask of the last stage equals the "
        "support of the float64 gradient of a surrogate of the model "
        "(`rfjax.adapters.oracle.grad_support`: activations made the identity, max-pool made "
        "average pool, positive weights, one positive random input). `n/a` for Keras and "
        "Flax models.",
        "",
        "![ERF/TRF ratio against TRF size](erf_trf_ratio.png)",
        "",
        "![Centre-unit TRF masks and ERF maps](gallery.png)",
        "",
        _table(_HEAD, [record_row(r) for r in records]),
        "",
    ]
    fails: dict[str, list[str]] = {}
    for r in records:
        for e in r.get("errors", []):
            key = f"{e['phase'].split(' ')[0]}: {e['type']}"
            names = fails.setdefault(key, [])
            if f"`{r['name']}`" not in names:
                names.append(f"`{r['name']}`")
    if fails:
        lines += ["## Failures, grouped", ""]
        for k, names in sorted(fails.items()):
            why = FAILURE_NOTES.get(k)
            lines.append(f"- **{k}** ({len(names)}): {', '.join(names)}"
                         + (f". {why}" if why else ""))
        lines.append("")
    lines += [
        "## Cross-check: google-research/receptive_field",
        "",
        "Their README lists the receptive field, effective stride and effective padding of "
        "the final end-point of TF-Slim models. The same published architecture in another "
        "framework is not always the same graph, so equal numbers are expected only where the "
        "graphs agree:",
        "",
        _table(["atlas entry", "stage", "res", "RF (rfjax)", "stride", "padding",
                "their model", "RF", "stride", "padding"], reference_rows(records)),
        "",
        REFERENCE_NOTES,
    ]
    return "\n".join(lines) + "\n"


#: Why a kind of failure happens (``"<phase>: <type>"`` as grouped in the report).
FAILURE_NOTES = {
    "run: Timeout": (
        "The model ran past the per-model time budget (`--timeout`, 900 s). `rfjax.trf` "
        "decides `is_global` from every unit's exact mask, never a sample; an output whose "
        "every unit is global and which has tens of thousands of units (DeepLabV3's "
        "224×224 map after its ASPP image pooling: 50,176 units) "
        "means that many backward mask passes on this 2-core CPU. Not a wrong answer: no "
        "field is recorded for the model."),
    "erf: Skipped": "The ERF is measured on the last stage, whose TRF failed first.",
}


REFERENCE_NOTES = """\
How to read the comparison:

- **Same definitions.** Both report, for the unit at output index 0, the field's extent
  (`size`), the jump between adjacent units (`stride`) and how far the field starts before
  input pixel 0 (`padding`: rfjax's `TRF.padding` is `-start` of unit 0, their *effective
  padding*). Their numbers come from the graph of the TF-Slim model; rfjax's from the
  torch / Keras graph it was given, every unit checked exactly.
- **Identical graphs, identical numbers.** VGG-16 (torchvision, timm, Keras: 212/32/90),
  Inception-v3 at 299 (torchvision and timm `Mixed_7c`: 1311/32/618), Inception-v4 and
  Inception-ResNet-v2 (timm: 2071/32/998, 3039/32/1482) and Keras' MobileNet (v1:
  315/32/126) agree to the pixel with TF-Slim.
- **ResNet-50: where the stride sits, not the padding.** The field grows by `2 * J` at each
  3×3 convolution whose *input* jump is `J`. TF-Slim's `resnet_v1_50` subsamples in the 3×3
  convolution of the *last* unit of blocks 1-3, Keras' `ResNet50` (the original Caffe model)
  in the 1×1 convolution of a stage's first unit: in both, the 3×3 inputs have jumps
  4,4,4 | 8,8,8,8 | 16×6 | 32×3, so 11 + 2(3·4 + 4·8 + 6·16 + 3·32) = 483. torchvision's and
  timm's ResNet-50 ("v1.5") put the stride in the 3×3 convolution of a stage's *first* unit,
  whose input is still on the finer grid: 4,4,4 | 4,8,8,8 | 8,16×5 | 16,32,32, so 427.
  ResNet-101: 1027 (TF-Slim) against torchvision's 971, for the same reason.
- **Padding conventions.** Keras' ResNet50 has TF-Slim's 483/32 but padding 241 instead of
  239: its stem pads the 112-pixel map by one pixel on each side (`ZeroPadding2D(1)`) before
  the 3×3/2 max-pool, where TF-Slim's `SAME` max-pool on an even map pads only at the
  bottom/right; one pixel at jump 2 moves the field's start by 2. torchvision's `alexnet` pads
  its first convolution by 2 where TF-Slim's `alexnet_v2` uses `VALID`: 66 against 64, with
  the same 195/32 (the rest of the two graphs pads alike).
"""
