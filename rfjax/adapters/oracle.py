"""The TRF oracle for PyTorch modules, without JAX: the support of a float64 PyTorch gradient.

:func:`grad_support` is where ``d(sum_c out[0, c, unit]) / dx`` is nonzero in a *surrogate*
of the module (:func:`surrogate`: a float64 copy with activations replaced by the identity,
max-pooling by average pooling over the same windows, positive weights and batch-norm
statistics that keep positive values positive), on positive random inputs: no gradient can
cancel or vanish, so its support is the exact theoretical receptive field that
:func:`rfjax.trf` computes. Used by the tests (``tests/test_adapters_torch.py``) and the
atlas (:mod:`rfjax.atlas`).

Softmaxes run tempered (:func:`_softmax_mode`): the surrogate's huge values would saturate
them and hide the field of an attention.

Known limits of the surrogate: an activation module that is neither one of
:data:`ACTIVATIONS` nor named like one (by class name, e.g. timm's ``HardSigmoid``) is kept,
and a saturating one (hard sigmoid, ReLU6) can then zero a gradient that the TRF counts.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

__all__ = ["ACTIVATION_NAMES", "activations", "grad_support", "run", "select", "surrogate"]

#: Class names of activation modules outside ``torch.nn`` (timm's own) made the identity too;
#: so is ResNeSt's ``RadixSoftmax``: with positive weights the surrogate's values reach 1e15,
#: where a softmax saturates and its gradient (the split-attention gate's) underflows to 0.
ACTIVATION_NAMES = frozenset({
    "RadixSoftmax",
    "GELU", "GELUTanh", "QuickGELU", "SiLU", "Swish", "SwishAuto", "Mish", "HardSwish",
    "HardSigmoid", "HardMish", "Sigmoid", "Tanh", "PReLU", "ReLU", "ReLU6", "LeakyReLU", "ELU",
    "Hardswish", "Hardsigmoid", "GELUTanhApprox", "SwishMe", "MishMe", "HardSwishMe",
    "HardSigmoidMe", "HardMishMe", "Softplus", "CELU", "SELU",
})


def activations() -> tuple:
    """The ``torch.nn`` activation classes the surrogate replaces by the identity."""
    import torch.nn as nn

    return (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
            nn.LeakyReLU, nn.ELU, nn.Mish, nn.Tanh)


def _is_activation(child: Any, classes: tuple) -> bool:
    return isinstance(child, classes) or type(child).__name__ in ACTIVATION_NAMES


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _DilatedMean(pool):
    """A dilated ``nn.MaxPool2d`` as the mean over the same windows (``nn.AvgPool2d`` has no
    dilation): a depthwise convolution with a constant kernel on the zero-padded input,
    cropped to the max-pool's output size (``ceil_mode`` included)."""
    import torch
    import torch.nn.functional as F

    k, s, p, d = (_pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size),
                  _pair(pool.padding), _pair(pool.dilation))

    def out_len(n, a):
        num = n + 2 * p[a] - d[a] * (k[a] - 1) - 1
        o = (num + (s[a] - 1 if pool.ceil_mode else 0)) // s[a] + 1
        return o - 1 if pool.ceil_mode and (o - 1) * s[a] >= n + p[a] else o

    class DilatedMean(torch.nn.Module):
        def forward(self, x):
            h, w = x.shape[-2:]
            o = (out_len(h, 0), out_len(w, 1))
            right = [max((o[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 - n - p[a], 0)
                     for a, n in enumerate((h, w))]
            xp = F.pad(x, (p[1], right[1], p[0], right[0]))
            c = x.shape[-3]
            kern = torch.full((c, 1) + k, 1.0 / (k[0] * k[1]), dtype=x.dtype)
            y = F.conv2d(xp, kern, stride=s, dilation=d, groups=c)
            return y[..., :o[0], :o[1]]

    return DilatedMean()


def surrogate(module):
    """float64 copy: activations -> identity, max-pool -> average pool, positive weights and
    batch-norm statistics that keep positive values positive (mean 0), so that on a positive
    input every value is positive and functional activations (``F.relu``) pass gradients."""
    import torch
    import torch.nn as nn

    classes = activations()
    m = copy.deepcopy(module).double().eval()
    for _, sub in list(m.named_modules()):
        for cname, child in list(sub.named_children()):
            if _is_activation(child, classes):
                setattr(sub, cname, nn.Identity())
            elif isinstance(child, nn.MaxPool2d) and child.dilation not in (1, (1, 1)):
                setattr(sub, cname, _DilatedMean(child))
            elif isinstance(child, nn.MaxPool2d):
                setattr(sub, cname, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                 ceil_mode=child.ceil_mode))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.05)
        for b_name, b in m.named_buffers():
            if b.is_floating_point():
                b.copy_(b.abs() * 0 if b_name.endswith("running_mean") else b.abs() + 0.5)
    return m


def select(out, output):
    """``out`` itself (``output=None``), ``output(out)`` for a callable, else ``out[output]``."""
    if output is None:
        return out
    if callable(output):
        return output(out)
    return out[output]


def run(module, x, output=None, layer=None):
    """``module(x)``, or the output of its submodule ``layer`` (a forward hook)."""
    if layer is None:
        return select(module(x), output)
    seen = {}
    hook = dict(module.named_modules())[layer].register_forward_hook(
        lambda mod, i, o: seen.__setitem__("out", o))
    try:
        module(x)
    finally:
        hook.remove()
    return select(seen["out"], output) if callable(output) else seen["out"]


def _tempered(x, dim):
    """``x / T``, ``T`` the largest finite magnitude along ``dim`` (detached, at least 1):
    the softmax of it has the same support and cannot saturate. Masks (``-inf``, ``finfo``'s
    extremes) are left out of ``T`` and stay masked."""
    import torch

    a = x.detach().abs()
    a = torch.where(a < 1e300, a, torch.zeros_like(a))
    return x / a.amax(dim=dim, keepdim=True).clamp_min(1.0)


def _attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False):
    """``F.scaled_dot_product_attention`` written out, with the tempered softmax."""
    import torch

    if enable_gqa and k.shape[-3] != q.shape[-3]:
        r = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(r, dim=-3), v.repeat_interleave(r, dim=-3)
    logits = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if is_causal:
        n, m = logits.shape[-2:]
        keep = torch.ones(n, m, dtype=torch.bool).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        logits = (logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else logits + attn_mask)
    return torch.softmax(_tempered(logits, -1), -1) @ v


def _softmax_mode():
    """A torch function mode under which the surrogate's softmaxes (``torch.softmax``,
    ``F.softmax``, ``Tensor.softmax``, ``nn.Softmax``, and the one inside
    ``F.scaled_dot_product_attention``) are tempered (:func:`_tempered`). Positive weights
    make a deep network's activations huge (1e29 in BotNet's last stage, which has no
    normalisation between its residual blocks): a softmax of such logits is one-hot and the
    gradient of its other keys underflows to 0, which would hide the attention's field."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    softmaxes = {torch.softmax, F.softmax, torch.Tensor.softmax, torch._softmax}

    class Tempered(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in softmaxes:
                x, rest = args[0], list(args[1:])
                dim = rest.pop(0) if rest else kwargs.pop("dim", None)
                if dim is None:
                    return func(*args, **kwargs)
                return func(_tempered(x, dim), dim, *rest, **kwargs)
            if func is F.scaled_dot_product_attention:
                return _attention(*args, **kwargs)
            return func(*args, **kwargs)

    return Tempered()


def grad_support(module, shape, unit, output=None, layer=None, seeds=(0, 1)):
    """(H, W) boolean: where d(sum_c out[0, c, unit]) / dx != 0 in the surrogate, float64.

    ``output``: an index or key into the module's output, or a callable applied to the
    output (or to the ``layer``'s output) that returns ``(N, C, *spatial)``."""
    import torch

    m = surrogate(module)
    sup = np.zeros(shape[2:], bool)
    for s in seeds:
        x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        x = (x + 0.1).requires_grad_(True)
        with _softmax_mode():
            y = run(m, x, output, layer)
            y[(0, slice(None)) + tuple(unit)].sum().backward()
        sup |= (x.grad[0] != 0).any(dim=0).numpy()
    return sup
