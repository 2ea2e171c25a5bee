"""The one table of ATen operators that :mod:`rfjax.adapters.pytorch` lowers an exported
PyTorch program with.

``ATEN`` maps an operator's name (``"conv2d"``, ``"add"``; ``"name.overload"`` where overloads
differ, in-place ``op_`` forms use ``op``) to its JAX function in
:mod:`rfjax.adapters.pytorch_ops`. A new operator is one entry here (and its function there).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from rfjax.adapters.pytorch_ops import (
    _any_all,
    _arg,
    _baddbmm,
    _cat,
    _channel_shuffle,
    _clamp,
    _copy,
    _cosine_similarity,
    _cumsum,
    _diagonal_scatter,
    _dropout,
    _dtype,
    _einsum,
    _elu,
    _embedding,
    _factory,
    _fill,
    _flip,
    _full_like,
    _gather,
    _glu,
    _hardtanh,
    _identity,
    _index_select,
    _instance_norm,
    _like,
    _linspace,
    _logsumexp,
    _masked_fill,
    _matmul,
    _mean,
    _narrow,
    _native_group_norm,
    _new,
    _new_full,
    _pad_mode,
    _pixel_shuffle,
    _pixel_unshuffle,
    _pow,
    _prelu,
    _reduce,
    _repeat,
    _repeat_interleave,
    _rms_norm,
    _scalar_tensor,
    _softplus,
    _sort,
    _stack,
    _std,
    _std_mean,
    _sum,
    _t,
    _topk,
    _transpose,
    _tri,
    _unflatten,
    _unsqueeze,
    _var,
    _var_mean,
    _vector_norm,
    _where,
    adaptive_max_pool,
    adaptive_pool,
    add,
    addmm,
    arange,
    avg_pool,
    batch_norm,
    batch_norm_no_training,
    chunk,
    conv_nd,
    conv_transpose_nd,
    convolution,
    div,
    expand,
    flatten,
    full,
    gelu,
    group_norm,
    index,
    index_put,
    layer_norm,
    linear,
    log_softmax,
    max_dim,
    max_pool,
    max_pool_with_indices,
    native_layer_norm,
    pad,
    permute,
    roll,
    rsub,
    scaled_dot_product_attention,
    select,
    select_scatter,
    slice_,
    slice_scatter,
    softmax,
    split,
    squeeze,
    sub,
    to_dtype,
    unbind,
    view,
)
from rfjax.adapters.pytorch_patches import (
    col2im,
    im2col,
    index_add,
    scatter,
    take_along_dim,
    unfold,
)
from rfjax.adapters.pytorch_recurrent import recurrent
from rfjax.adapters.pytorch_resample import upsample_linear, upsample_nearest, upsample_probed

__all__ = ["ATEN", "lookup"]

ATEN: dict[str, Callable] = {
    # convolutions
    "convolution": convolution, "_convolution": convolution,
    "conv1d": conv_nd, "conv2d": conv_nd, "conv3d": conv_nd,
    "conv_transpose1d": conv_transpose_nd, "conv_transpose2d": conv_transpose_nd,
    "conv_transpose3d": conv_transpose_nd,
    # normalisation
    "batch_norm": batch_norm, "_native_batch_norm_legit_no_training": batch_norm_no_training,
    "layer_norm": layer_norm, "native_layer_norm": native_layer_norm,
    "group_norm": group_norm,
    # pooling and resampling
    "max_pool1d": max_pool(1), "max_pool2d": max_pool(2), "max_pool3d": max_pool(3),
    "max_pool2d_with_indices": max_pool_with_indices(2),
    "max_pool3d_with_indices": max_pool_with_indices(3),
    "avg_pool1d": avg_pool(1), "avg_pool2d": avg_pool(2), "avg_pool3d": avg_pool(3),
    "adaptive_avg_pool1d": adaptive_pool(1, jnp.mean),
    "adaptive_avg_pool2d": adaptive_pool(2, jnp.mean),
    "_adaptive_avg_pool2d": adaptive_pool(2, jnp.mean),
    "adaptive_avg_pool3d": adaptive_pool(3, jnp.mean),
    "adaptive_max_pool2d": adaptive_max_pool(2),
    "upsample_nearest1d": upsample_nearest(1), "upsample_nearest2d": upsample_nearest(2),
    "upsample_nearest3d": upsample_nearest(3),
    "upsample_linear1d": upsample_linear(1), "upsample_bilinear2d": upsample_linear(2),
    "upsample_trilinear3d": upsample_linear(3),
    "upsample_bicubic2d": upsample_probed("upsample_bicubic2d", 2),
    "_upsample_bicubic2d_aa": upsample_probed("_upsample_bicubic2d_aa", 2),
    "_upsample_bilinear2d_aa": upsample_probed("_upsample_bilinear2d_aa", 2),
    # activations
    "relu": jax.nn.relu, "relu6": jax.nn.relu6, "gelu": gelu, "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "hardswish": jax.nn.hard_swish,
    "hardsigmoid": jax.nn.hard_sigmoid, "hardtanh": _hardtanh, "mish": jax.nn.mish,
    "leaky_relu": lambda x, s=0.01: jax.nn.leaky_relu(x, s), "elu": _elu,
    "softplus": _softplus, "softmax": softmax, "_softmax": softmax,
    "log_softmax": log_softmax, "_log_softmax": log_softmax,
    "exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "neg": jnp.negative,
    "abs": jnp.abs, "erf": jax.scipy.special.erf, "sin": jnp.sin, "cos": jnp.cos,
    "reciprocal": jnp.reciprocal, "sign": jnp.sign, "floor": jnp.floor, "ceil": jnp.ceil,
    "clamp": _clamp, "clip": _clamp, "clamp_min": lambda x, lo: jnp.maximum(x, lo),
    "clamp_max": lambda x, hi: jnp.minimum(x, hi),
    # arithmetic and comparisons
    "add": add, "sub": sub, "rsub": rsub, "mul": jnp.multiply, "div": div, "pow": _pow,
    "maximum": jnp.maximum, "minimum": jnp.minimum, "where": _where,
    "eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal,
    "gt": jnp.greater, "ge": jnp.greater_equal, "logical_not": jnp.logical_not,
    "logical_and": jnp.logical_and, "logical_or": jnp.logical_or,
    "masked_fill": _masked_fill, "fill": _fill, "copy": _copy,
    # reductions
    "mean": _mean, "sum": _sum, "amax": _reduce(jnp.max), "amin": _reduce(jnp.min),
    "max": max_dim, "max.other": jnp.maximum, "min.other": jnp.minimum,
    "var": _reduce(jnp.var), "cumsum": _cumsum,
    # contractions
    "linear": linear, "addmm": addmm, "mm": _matmul, "bmm": _matmul, "matmul": _matmul,
    "einsum": _einsum, "scaled_dot_product_attention": scaled_dot_product_attention,
    # shapes and data movement
    "flatten": flatten, "view": view, "reshape": view, "_unsafe_view": view,
    "permute": permute, "transpose": _transpose, "t": _t, "expand": expand,
    "unsqueeze": _unsqueeze, "squeeze": squeeze, "select": select, "slice": slice_,
    "narrow": _narrow, "cat": _cat, "concat": _cat, "stack": _stack, "split": split,
    "split_with_sizes": split, "chunk": chunk, "unbind": unbind, "pad": pad,
    "constant_pad_nd": lambda x, p, v=0: pad(x, p, "constant", v), "roll": roll,
    "flip": _flip, "repeat": _repeat, "index": index, "index_put": index_put,
    "slice_scatter": slice_scatter, "select_scatter": select_scatter,
    # identities in evaluation mode, copies and dtypes
    "dropout": _dropout, "feature_dropout": _dropout, "alpha_dropout": _dropout,
    "feature_alpha_dropout": _dropout, "native_dropout": lambda x, *a, **k: (x, None),
    "contiguous": _identity, "clone": _identity, "alias": _identity, "detach": _identity,
    "lift_fresh_copy": _identity, "_to_copy": to_dtype, "to": to_dtype, "type_as":
        lambda x, other: x.astype(other.dtype),
    "zeros_like": _like(lambda x: 0), "ones_like": _like(lambda x: 1),
    "new_zeros": _new(0), "new_ones": _new(1), "zeros": _factory(0), "ones": _factory(1),
    "full": full, "arange": arange, "scalar_tensor": _scalar_tensor,
}
ATEN.update({
    "var": _var, "std": _std, "var_mean": _var_mean, "std_mean": _std_mean,
    "linalg_vector_norm": _vector_norm, "norm": lambda x, p=2, dim=None, keepdim=False,
    **k: _vector_norm(x, 2 if p is None else p, dim, keepdim),
    "instance_norm": _instance_norm, "native_group_norm": _native_group_norm,
    "pixel_shuffle": _pixel_shuffle, "pixel_unshuffle": _pixel_unshuffle,
    "prelu": _prelu, "_prelu_kernel": _prelu, "glu": _glu, "selu": jax.nn.selu,
    "celu": lambda x, alpha=1.0: jax.nn.celu(x, alpha), "log_sigmoid": jax.nn.log_sigmoid,
    "softsign": jax.nn.soft_sign, "square": jnp.square, "round": jnp.round,
    "trunc": jnp.trunc, "exp2": jnp.exp2, "log2": jnp.log2, "log1p": jnp.log1p,
    "expm1": jnp.expm1, "sinh": jnp.sinh, "cosh": jnp.cosh, "atan": jnp.arctan,
    "atan2": jnp.arctan2, "erfinv": jax.scipy.special.erfinv, "lerp":
        lambda a, b, w: a + w * (b - a), "embedding": _embedding, "baddbmm": _baddbmm,
    "repeat_interleave": _repeat_interleave, "tril": _tri(jnp.tril), "triu": _tri(jnp.triu),
    "bitwise_not": jnp.invert, "bitwise_and": jnp.bitwise_and, "bitwise_or": jnp.bitwise_or,
    "floor_divide": jnp.floor_divide, "remainder": jnp.remainder, "fmod": jnp.fmod,
    "gather": _gather, "topk": _topk, "sort": _sort, "argmax": _arg(jnp.argmax),
    "argmin": _arg(jnp.argmin), "unflatten": _unflatten, "movedim": lambda x, a, b:
        jnp.moveaxis(x, a, b), "swapaxes": _transpose, "view_as": lambda x, o:
        x.reshape(o.shape), "reshape_as": lambda x, o: x.reshape(o.shape), "expand_as":
        lambda x, o: jnp.broadcast_to(x, o.shape), "full_like": _full_like,
    "new_full": _new_full, "empty_like": _like(lambda x: 0), "new_empty": _new(0),
    "empty": _factory(0), "linspace": _linspace, "reflection_pad1d": _pad_mode("reflect"),
    "reflection_pad2d": _pad_mode("reflect"), "replication_pad2d": _pad_mode("replicate"),
    "replication_pad1d": _pad_mode("replicate"), "index_select": _index_select,
    "any": _any_all(jnp.any), "all": _any_all(jnp.all), "logsumexp": _logsumexp,
    "min": lambda x, dim=None, keepdim=False: jnp.min(x) if dim is None else (
        jnp.min(x, axis=dim, keepdims=keepdim), jnp.argmin(x, axis=dim, keepdims=keepdim)),
    "prod": lambda x, dim=None, keepdim=False, dtype=None: jnp.prod(x, axis=dim,
                                                                     keepdims=keepdim),
    "cumprod": lambda x, dim, dtype=None: jnp.cumprod(x, axis=dim),
    "hardshrink": lambda x, lambd=0.5: jnp.where(jnp.abs(x) > lambd, x, 0),
    "softshrink": lambda x, lambd=0.5: jnp.where(x > lambd, x - lambd,
                                                 jnp.where(x < -lambd, x + lambd, 0)),
    "threshold": lambda x, t, v: jnp.where(x > t, x, v),
    "log10": jnp.log10, "tan": jnp.tan, "asin": jnp.arcsin, "acos": jnp.arccos,
    "unfold": unfold, "im2col": im2col, "col2im": col2im, "scatter": scatter("set"),
    "scatter_add": scatter("add"), "index_add": index_add, "take_along_dim": take_along_dim,
    "rms_norm": _rms_norm, "channel_shuffle": _channel_shuffle,
    "native_channel_shuffle": _channel_shuffle, "tile": lambda x, dims: jnp.tile(x, dims),
    "tensor_split.sections": lambda x, n, dim=0: jnp.array_split(x, n, axis=dim),
    "tensor_split.indices": lambda x, idx, dim=0: jnp.split(x, idx, axis=dim),
    "diagonal": lambda x, offset=0, dim1=0, dim2=1: jnp.diagonal(x, offset, dim1, dim2),
    "hypot": jnp.hypot, "erfc": jax.scipy.special.erfc, "sgn": jnp.sign, "outer": jnp.outer,
    "frac": lambda x: x - jnp.trunc(x), "fmax": jnp.fmax, "fmin": jnp.fmin,
    "logit": lambda x, eps=None: jax.scipy.special.logit(
        x if eps is None else jnp.clip(x, eps, 1 - eps)),
    "cosine_similarity": _cosine_similarity,
    "nanmean": lambda x, dim=None, keepdim=False, dtype=None: jnp.nanmean(
        x, axis=None if dim is None else tuple(dim) if isinstance(dim, (list, tuple)) else dim,
        keepdims=keepdim),
    "rrelu": lambda x, lower=1 / 8, upper=1 / 3, training=False, generator=None:
        jax.nn.leaky_relu(x, (lower + upper) / 2),
    "aminmax": lambda x, dim=None, keepdim=False: (
        jnp.min(x, axis=dim, keepdims=keepdim), jnp.max(x, axis=dim, keepdims=keepdim)),
    "_upsample_nearest_exact1d": upsample_nearest(1, exact=True),
    "_upsample_nearest_exact2d": upsample_nearest(2, exact=True),
    "_upsample_nearest_exact3d": upsample_nearest(3, exact=True),
    "adaptive_max_pool1d": adaptive_max_pool(1),
    "max_pool1d_with_indices": max_pool_with_indices(1),
    "eye": lambda n, m=None, *a, dtype=None, **k: jnp.eye(
        n, m, dtype=jnp.float32 if dtype is None else _dtype(dtype)),
    "zero": lambda x: jnp.zeros_like(x), "diagonal_scatter": _diagonal_scatter,
    "lstm.input": recurrent("lstm"), "gru.input": recurrent("gru"),
    "rnn_tanh.input": recurrent("rnn_tanh"), "rnn_relu.input": recurrent("rnn_relu"),
    "addcmul": lambda x, t1, t2, value=1: x + value * (t1 * t2),
    "addcdiv": lambda x, t1, t2, value=1: x + value * (t1 / t2),
    "isnan": jnp.isnan, "isinf": jnp.isinf, "nan_to_num": lambda x, nan=0.0, posinf=None,
    neginf=None: jnp.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf),
})


def _fft1(f):
    """``torch.fft.<f>(x, n, dim, norm)`` (one axis)."""
    return lambda x, n=None, dim=-1, norm=None: f(x, n, dim, norm)


def _fftn(f, default_dim):
    """``torch.fft.<f>2/<f>n(x, s, dim, norm)`` (several axes)."""
    return lambda x, s=None, dim=default_dim, norm=None: f(x, s, dim, norm)


# Fourier transforms (global along their axes) and complex values (GFNet-style filters)
ATEN.update({
    **{f"fft_{k}": _fft1(getattr(jnp.fft, k)) for k in
       ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")},
    **{f"fft_{k}2": _fftn(getattr(jnp.fft, f"{k}2"), (-2, -1)) for k in
       ("fft", "ifft", "rfft", "irfft")},
    **{f"fft_{k}n": _fftn(getattr(jnp.fft, f"{k}n"), None) for k in
       ("fft", "ifft", "rfft", "irfft")},
    "fft_fftshift": lambda x, dim=None: jnp.fft.fftshift(x, dim),
    "fft_ifftshift": lambda x, dim=None: jnp.fft.ifftshift(x, dim),
    "view_as_complex": lambda x: lax.complex(x[..., 0], x[..., 1]),
    "view_as_real": lambda x: jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1),
    "real": jnp.real, "imag": jnp.imag, "complex": lax.complex, "conj": jnp.conj,
    "_conj": jnp.conj, "conj_physical": jnp.conj, "resolve_conj": _identity,
    "resolve_neg": _identity, "angle": jnp.angle,
})


def lookup(name: str, overload: str = "default") -> Callable | None:
    """The JAX function of an ATen operator (``name.overload`` first, then ``name``; an
    in-place ``op_`` uses ``op``)."""
    if name.endswith("_") and not name.startswith("_") and name[:-1] in ATEN:
        name = name[:-1]
    return ATEN.get(f"{name}.{overload}", ATEN.get(name))

