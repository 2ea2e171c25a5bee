"""ATen operators in JAX: ``fn(*args, **kwargs)`` on ``jax.Array`` values with PyTorch's
argument order and defaults and PyTorch's layouts (``NCHW``, weights ``OIHW``). Every function
computes what the operator computes in evaluation mode (dropout is the identity, batch norm
uses its running statistics), in the dtype of its input. The table that names them is
:data:`rfjax.adapters.pytorch_table.ATEN`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["UnsupportedOperatorError"]


class UnsupportedOperatorError(NotImplementedError):
    """An ATen operator rfjax cannot lower (the message names it and the module)."""


def _tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(a) for a in v)
    return v * n if len(v) == 1 else v


def _dims(n_sp: int) -> tuple[str, str, str]:
    sp = "DHW"[-n_sp:] if n_sp <= 3 else None
    return "NC" + sp, "OI" + sp, "NC" + sp


# ---------------------------------------------------------------------------- convolutions


def convolution(x, w, b=None, stride=1, padding=0, dilation=1, transposed=False,
                output_padding=0, groups=1):
    n = w.ndim - 2
    stride, dilation = _tuple(stride, n), _tuple(dilation, n)
    if transposed:
        return _conv_transpose(x, w, b, stride, _tuple(padding, n), _tuple(output_padding, n),
                               groups, dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pad = [(0, 0)] * n
        else:  # "same": PyTorch puts the odd element on the right, as XLA's SAME does
            total = [d * (k - 1) for d, k in zip(dilation, w.shape[2:], strict=True)]
            pad = [(t // 2, t - t // 2) for t in total]
    else:
        pad = [(p, p) for p in _tuple(padding, n)]
    y = lax.conv_general_dilated(x, w.astype(x.dtype), stride, pad, rhs_dilation=dilation,
                                 feature_group_count=groups, dimension_numbers=_dims(n))
    return y if b is None else y + b.astype(y.dtype).reshape((1, -1) + (1,) * n)


def _conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation):
    """A transposed convolution: the gradient of a convolution, as an lhs-dilated one with the
    kernel flipped and its in/out roles swapped per group. ``w``: ``(C_in, C_out/g, *k)``."""
    n = w.ndim - 2
    cin, cout_g, ks = w.shape[0], w.shape[1], w.shape[2:]
    wg = w.reshape((groups, cin // groups, cout_g) + ks)
    wg = jnp.swapaxes(wg, 1, 2).reshape((groups * cout_g, cin // groups) + ks)
    wg = jnp.flip(wg, axis=tuple(range(2, 2 + n)))
    pad = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, p, op, d in
           zip(ks, padding, output_padding, dilation, strict=True)]
    y = lax.conv_general_dilated(x, wg.astype(x.dtype), (1,) * n, pad, lhs_dilation=stride,
                                 rhs_dilation=dilation, feature_group_count=groups,
                                 dimension_numbers=_dims(n))
    return y if b is None else y + b.astype(y.dtype).reshape((1, -1) + (1,) * n)


def conv_nd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return convolution(x, w, b, stride, padding, dilation, False, 0, groups)


def conv_transpose_nd(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                      dilation=1):
    return convolution(x, w, b, stride, padding, dilation, True, output_padding, groups)


# ---------------------------------------------------------------------------- normalisation


def _channel(v, ndim: int):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm(x, weight, bias, mean, var, training=False, momentum=0.1, eps=1e-5,
               cudnn_enabled=True):
    if training or mean is None:
        # batch statistics: in an eval-mode module only an explicit F.batch_norm(...,
        # training=True) gets here, e.g. timm's weight standardisation of conv kernels
        axes = tuple(a for a in range(x.ndim) if a != 1)
        mean = jnp.mean(x, axis=axes)
        var = jnp.var(x, axis=axes)
    y = (x - _channel(mean, x.ndim)) * lax.rsqrt(_channel(var, x.ndim) + eps)
    if weight is not None:
        y = y * _channel(weight, x.ndim)
    if bias is not None:
        y = y + _channel(bias, x.ndim)
    return y.astype(x.dtype)


def batch_norm_no_training(x, weight, bias, mean, var, momentum, eps):
    y = batch_norm(x, weight, bias, mean, var, False, momentum, eps)
    return y, jnp.zeros((0,), x.dtype), jnp.zeros((0,), x.dtype)


def layer_norm(x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def native_layer_norm(x, shape, weight, bias, eps):
    return layer_norm(x, shape, weight, bias, eps), None, None


def group_norm(x, groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    n, c = x.shape[:2]
    g = x.reshape((n, groups, -1))
    mean = jnp.mean(g, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=-1, keepdims=True)
    y = ((g - mean) * lax.rsqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * _channel(weight, x.ndim)
    if bias is not None:
        y = y + _channel(bias, x.ndim)
    return y


# ---------------------------------------------------------------------------- pooling


def _pool_padding(n_in, k, s, p, d, ceil_mode):
    """PyTorch's pooling output size and the (lo, hi) padding that gives it."""
    eff = d * (k - 1) + 1
    num = n_in + 2 * p - eff
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= n_in + p:  # the last window must start inside
        out -= 1
    hi = max((out - 1) * s + eff - n_in - p, p)
    return out, (p, hi)


def _pool(x, kernel, stride, padding, dilation, ceil_mode, n):
    k = _tuple(kernel, n)
    s = _tuple(stride, n) if stride not in (None, [], ()) else k
    p, d = _tuple(padding, n), _tuple(dilation, n)
    pads = [_pool_padding(x.shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode)[1]
            for i in range(n)]
    lead = x.ndim - n
    return ((1,) * lead + k, (1,) * lead + s, [(0, 0)] * lead + pads, (1,) * lead + d, p)


def max_pool(n):
    def fn(x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
        win, st, pads, dil, _ = _pool(x, kernel, stride, padding, dilation, ceil_mode, n)
        init = -np.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        # a NumPy init value: lax recognises the max monoid (differentiable reduce_window_max)
        return lax.reduce_window(x, np.array(init, x.dtype), lax.max, win, st, pads,
                                 window_dilation=dil)
    return fn


def max_pool_with_indices(n):
    pool = max_pool(n)

    def fn(*args, **kwargs):
        return pool(*args, **kwargs), None
    return fn


def avg_pool(n):
    def fn(x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
           divisor_override=None):
        win, st, pads, dil, p = _pool(x, kernel, stride, padding, 1, ceil_mode, n)
        zero = np.array(0, x.dtype)
        total = lax.reduce_window(x, zero, lax.add, win, st, pads)
        if divisor_override:
            return total / divisor_override
        # PyTorch divides by the window clipped to the padded input (count_include_pad) or
        # to the input: the count of ones over that region
        lead = x.ndim - n
        ones = jnp.ones(x.shape[lead:], x.dtype)
        if count_include_pad:
            ones = jnp.pad(ones, [(q, q) for q in p], constant_values=1)
            cpads = [(lo - q, hi - q) for (lo, hi), q in zip(pads[lead:], p, strict=True)]
        else:
            cpads = pads[lead:]
        count = lax.reduce_window(ones, zero, lax.add, win[lead:], st[lead:], cpads)
        return total / count
    return fn


def _adaptive_bins(n_in: int, n_out: int):
    return [(math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out))
            for i in range(n_out)]


def adaptive_pool(n, reduce: Callable):
    def fn(x, output_size):
        out = [x.shape[-n + i] if o is None else int(o)
               for i, o in enumerate(_tuple(output_size, n) if not isinstance(output_size,
                                                                              int)
                                     else (output_size,) * n)]
        for i in range(n):
            ax = x.ndim - n + i
            if x.shape[ax] % out[i] == 0:  # equal bins: a reshape
                shp = x.shape[:ax] + (out[i], x.shape[ax] // out[i]) + x.shape[ax + 1:]
                x = reduce(x.reshape(shp), axis=ax + 1)
            else:
                x = jnp.stack([reduce(lax.slice_in_dim(x, a, b, axis=ax), axis=ax)
                               for a, b in _adaptive_bins(x.shape[ax], out[i])], axis=ax)
        return x
    return fn


def adaptive_max_pool(n):
    pool = adaptive_pool(n, jnp.max)

    def fn(x, output_size):
        return pool(x, output_size), None
    return fn


# ---------------------------------------------------------------------------- shapes


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def flatten(x, start=0, end=-1):
    s, e = _dim(start, max(x.ndim, 1)), _dim(end, max(x.ndim, 1))
    return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])


def view(x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (list, tuple)) else shape
    return x.reshape(tuple(int(s) for s in shape))


def permute(x, dims):
    return jnp.transpose(x, tuple(_dim(d, x.ndim) for d in dims))


def expand(x, size, implicit=False):
    size = tuple(x.shape[i - (len(size) - x.ndim)] if s == -1 else s for i, s in enumerate(size))
    return jnp.broadcast_to(x, size)


def squeeze(x, dim=None):
    if dim is None:
        return jnp.squeeze(x)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    dims = tuple(d for d in (_dim(d, x.ndim) for d in dims) if x.shape[d] == 1)
    return jnp.squeeze(x, dims) if dims else x


def select(x, dim, index):
    return jnp.take(x, index, axis=dim)


def slice_(x, dim=0, start=None, end=None, step=1):
    d = _dim(dim, x.ndim)
    n = x.shape[d]
    start = 0 if start is None else max(min(start + n if start < 0 else start, n), 0)
    end = n if end is None else max(min(end + n if end < 0 else end, n), 0)
    return lax.slice_in_dim(x, start, max(end, start), step, axis=d)


def split(x, size, dim=0):
    n = x.shape[dim]
    sizes = [size] * (n // size) + ([n % size] if n % size else []) if isinstance(size, int) \
        else list(size)
    return jnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=dim)


def chunk(x, chunks, dim=0):
    return split(x, -(-x.shape[dim] // chunks), dim)


def unbind(x, dim=0):
    return [jnp.take(x, i, axis=dim) for i in range(x.shape[dim])]


def pad(x, pads, mode="constant", value=None):
    n = len(pads) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pads[2 * i], pads[2 * i + 1])
                                        for i in reversed(range(n))]
    if mode == "constant":
        crop = tuple(slice(-lo if lo < 0 else None, hi if hi < 0 else None) for lo, hi in widths)
        return jnp.pad(x[crop], [(max(lo, 0), max(hi, 0)) for lo, hi in widths],
                       constant_values=0 if value is None else value)
    return jnp.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge",
                                    "circular": "wrap"}[mode])


def roll(x, shifts, dims=()):
    if not dims:
        return jnp.roll(x.reshape(-1), shifts).reshape(x.shape)
    return jnp.roll(x, tuple(_tuple(shifts, 1)), tuple(_tuple(dims, 1)))


def index(x, indices):
    idx = tuple(slice(None) if i is None else i for i in indices)
    return x[idx]


def index_put(x, indices, values, accumulate=False):
    idx = tuple(slice(None) if i is None else i for i in indices)
    return x.at[idx].add(values) if accumulate else x.at[idx].set(values)


def slice_scatter(x, src, dim=0, start=None, end=None, step=1):
    d = _dim(dim, x.ndim)
    n = x.shape[d]
    start = 0 if start is None else (start + n if start < 0 else start)
    end = n if end is None else min(end + n if end < 0 else end, n)
    idx = (slice(None),) * d + (slice(start, end, step),)
    return x.at[idx].set(src)


def select_scatter(x, src, dim, index):
    return x.at[(slice(None),) * _dim(dim, x.ndim) + (index,)].set(src)


# ---------------------------------------------------------------------------- arithmetic


def _alpha(y, alpha):
    return y if alpha == 1 else y * alpha


def add(a, b, alpha=1):
    return a + _alpha(b, alpha)


def sub(a, b, alpha=1):
    return a - _alpha(b, alpha)


def rsub(a, b, alpha=1):
    return b - _alpha(a, alpha)


def div(a, b, rounding_mode=None):
    if rounding_mode == "floor":
        return jnp.floor_divide(a, b)
    if rounding_mode == "trunc":
        return jnp.trunc(a / b).astype(jnp.result_type(a, b))
    return jnp.true_divide(a, b)


def gelu(x, approximate="none"):
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def softmax(x, dim, half_to_float=False, dtype=None):
    return jax.nn.softmax(x if dtype is None else x.astype(_dtype(dtype)), axis=dim)


def log_softmax(x, dim, half_to_float=False, dtype=None):
    return jax.nn.log_softmax(x if dtype is None else x.astype(_dtype(dtype)), axis=dim)


def _reduce(fn):
    def rule(x, dim=None, keepdim=False, dtype=None):
        if isinstance(dim, int):
            dim = (dim,)
        axes = None if dim is None or len(dim) == 0 else tuple(_dim(d, x.ndim) for d in dim)
        y = fn(x, axis=axes, keepdims=keepdim)
        return y if dtype is None else y.astype(_dtype(dtype))
    return rule


def max_dim(x, dim=None, keepdim=False):
    if dim is None:
        return jnp.max(x)
    return jnp.max(x, axis=dim, keepdims=keepdim), jnp.argmax(x, axis=dim, keepdims=keepdim)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = jnp.einsum("...qd,...kd->...qk", q, k) * scale
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        logits = jnp.where(np.tril(np.ones((L, S), bool)), logits, -jnp.inf)
    if attn_mask is not None:
        logits = (jnp.where(attn_mask, logits, -jnp.inf) if attn_mask.dtype == jnp.bool_
                  else logits + attn_mask)
    return jnp.einsum("...qk,...kd->...qd", jax.nn.softmax(logits, axis=-1), v)


def linear(x, w, b=None):
    y = jnp.matmul(x, w.T)
    return y if b is None else y + b


def addmm(b, x, w, beta=1, alpha=1):
    return beta * b + alpha * (x @ w)


def _dtype(d):
    import torch

    table = {torch.float32: jnp.float32, torch.float64: jnp.float64, torch.float16: jnp.float16,
             torch.bfloat16: jnp.bfloat16, torch.int64: jnp.int32, torch.int32: jnp.int32,
             torch.bool: jnp.bool_, torch.uint8: jnp.uint8, torch.int8: jnp.int8}
    return table[d] if not isinstance(d, np.dtype) else d


def to_dtype(x, *args, dtype=None, **kwargs):
    for a in args:
        if not isinstance(a, (bool, type(None), str)) and "dtype" in type(a).__name__:
            dtype = a
    return x if dtype is None else x.astype(_dtype(dtype))


def _like(fill):
    def fn(x, *args, dtype=None, **kwargs):
        return jnp.full(x.shape, fill(x), x.dtype if dtype is None else _dtype(dtype))
    return fn


def _new(fill):
    def fn(x, size, *args, dtype=None, **kwargs):
        return jnp.full(tuple(size), fill, x.dtype if dtype is None else _dtype(dtype))
    return fn


def _factory(fill):
    def fn(size, *args, dtype=None, **kwargs):
        return jnp.full(tuple(size), fill, jnp.float32 if dtype is None else _dtype(dtype))
    return fn


def full(size, value, *args, dtype=None, **kwargs):
    return jnp.full(tuple(size), value, jnp.float32 if dtype is None else _dtype(dtype))


def arange(*args, dtype=None, **kwargs):
    nums = [a for a in args if isinstance(a, (int, float))]
    return jnp.arange(*nums, dtype=None if dtype is None else _dtype(dtype))


def _identity(x, *args, **kwargs):
    return x


def _dropout(x, *args, **kwargs):  # evaluation mode: the identity
    return x


def _hardtanh(x, lo=-1.0, hi=1.0):
    return jnp.clip(x, lo, hi)


def _clamp(x, lo=None, hi=None):
    return jnp.clip(x, lo, hi)


def _where(c, a, b):
    return jnp.where(c, a, b)


def _masked_fill(x, mask, value):
    return jnp.where(mask, jnp.asarray(value, x.dtype), x)


def _fill(x, value):
    return jnp.full(x.shape, value, x.dtype)


def _copy(x, src, non_blocking=False):
    return jnp.broadcast_to(jnp.asarray(src, x.dtype), x.shape)


def _elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return scale * jnp.where(x > 0, x, alpha * jnp.expm1(input_scale * x))


def _softplus(x, beta=1.0, threshold=20.0):
    return jnp.where(x * beta > threshold, x, jax.nn.softplus(beta * x) / beta)


def _einsum(eq, tensors, path=None):
    return jnp.einsum(eq, *tensors)


def _cat(tensors, dim=0):
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    return jnp.concatenate(tensors, axis=dim)


def _stack(tensors, dim=0):
    return jnp.stack(tensors, axis=dim)


def _transpose(x, a, b):
    return jnp.swapaxes(x, a, b)


def _t(x):
    return x.T


def _unsqueeze(x, d):
    return jnp.expand_dims(x, _dim(d, x.ndim + 1))


def _repeat(x, repeats):
    return jnp.tile(x, tuple(repeats))


def _mean(x, dim=None, keepdim=False, dtype=None):
    return _reduce(jnp.mean)(x, dim, keepdim, dtype)


def _sum(x, dim=None, keepdim=False, dtype=None):
    return _reduce(jnp.sum)(x, dim, keepdim, dtype)


def _pow(a, b):
    return jnp.power(a, b)


def _flip(x, dims):
    return jnp.flip(x, tuple(dims))


def _narrow(x, dim, start, length):
    return slice_(x, dim, start, start + length)


def _cumsum(x, dim, dtype=None):
    return jnp.cumsum(x, axis=dim)


def _matmul(a, b):
    return jnp.matmul(a, b)


def _scalar_tensor(v, *args, dtype=None, **kwargs):
    return jnp.asarray(v, jnp.float32 if dtype is None else _dtype(dtype))


# ---------------------------------------------------------------------------- more operators


def _var(x, dim=None, unbiased=True, keepdim=False, *, correction=None):
    if isinstance(dim, bool):  # var(x, unbiased)
        dim, unbiased = None, dim
    ddof = (1 if unbiased else 0) if correction is None else correction
    axes = None if dim is None else tuple(_tuple(dim, 1))
    return jnp.var(x, axis=axes, ddof=ddof, keepdims=keepdim)


def _std(x, dim=None, unbiased=True, keepdim=False, *, correction=None):
    return jnp.sqrt(_var(x, dim, unbiased, keepdim, correction=correction))


def _var_mean(x, dim=None, unbiased=True, keepdim=False, *, correction=None):
    axes = None if dim is None else tuple(_tuple(dim, 1))
    return (_var(x, dim, unbiased, keepdim, correction=correction),
            jnp.mean(x, axis=axes, keepdims=keepdim))


def _std_mean(x, dim=None, unbiased=True, keepdim=False, *, correction=None):
    v, m = _var_mean(x, dim, unbiased, keepdim, correction=correction)
    return jnp.sqrt(v), m


def _vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    axes = None if dim is None else tuple(_tuple(dim, 1))
    return jnp.linalg.norm(x, ord=ord, axis=axes, keepdims=keepdim) if axes is None or \
        len(axes) == 1 else jnp.sum(jnp.abs(x) ** ord, axis=axes, keepdims=keepdim) ** (1 / ord)


def _instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5, cudnn_enabled=True):
    if not use_input_stats:
        return batch_norm(x, weight, bias, running_mean, running_var, False, momentum, eps)
    axes = tuple(range(2, x.ndim))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + eps)
    if weight is not None:
        y = y * _channel(weight, x.ndim)
    if bias is not None:
        y = y + _channel(bias, x.ndim)
    return y


def _native_group_norm(x, weight, bias, n, c, hw, groups, eps):
    return group_norm(x, groups, weight, bias, eps), None, None


def _pixel_shuffle(x, r):
    n, c, h, w = x.shape
    x = x.reshape(n, c // (r * r), r, r, h, w)
    return jnp.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(n, c // (r * r), h * r, w * r)


def _pixel_unshuffle(x, r):
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // r, r, w // r, r)
    return jnp.transpose(x, (0, 1, 3, 5, 2, 4)).reshape(n, c * r * r, h // r, w // r)


def _prelu(x, w):
    return jnp.where(x >= 0, x, x * (_channel(w, x.ndim) if x.ndim >= 2 and w.size > 1 else w))


def _glu(x, dim=-1):
    a, b = jnp.split(x, 2, axis=dim)
    return a * jax.nn.sigmoid(b)


def _embedding(weight, indices, *args, **kwargs):
    return jnp.take(weight, indices, axis=0)


def _baddbmm(b, x, y, beta=1, alpha=1):
    return beta * b + alpha * jnp.matmul(x, y)


def _repeat_interleave(x, repeats, dim=None, output_size=None):
    return jnp.repeat(x, repeats, axis=dim)


def _tri(fn):
    def rule(x, diagonal=0):
        return fn(x, k=diagonal)
    return rule


def _gather(x, dim, index, sparse_grad=False):
    return jnp.take_along_axis(x, index, axis=dim)


def _topk(x, k, dim=-1, largest=True, sorted=True):
    xm = jnp.moveaxis(x, dim, -1)
    v, i = lax.top_k(xm if largest else -xm, k)
    return jnp.moveaxis(v if largest else -v, -1, dim), jnp.moveaxis(i, -1, dim)


def _sort(x, dim=-1, descending=False, stable=False):
    i = jnp.argsort(-x if descending else x, axis=dim, stable=True)
    return jnp.take_along_axis(x, i, axis=dim), i


def _arg(fn):
    def rule(x, dim=None, keepdim=False):
        return fn(x, axis=dim, keepdims=keepdim)
    return rule


def _unflatten(x, dim, sizes):
    d = _dim(dim, x.ndim)
    return x.reshape(x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


def _full_like(x, value, *args, dtype=None, **kwargs):
    return jnp.full(x.shape, value, x.dtype if dtype is None else _dtype(dtype))


def _new_full(x, size, value, *args, dtype=None, **kwargs):
    return jnp.full(tuple(size), value, x.dtype if dtype is None else _dtype(dtype))


def _linspace(start, end, steps, *args, dtype=None, **kwargs):
    return jnp.linspace(start, end, steps, dtype=None if dtype is None else _dtype(dtype))


def _pad_mode(mode):
    def rule(x, pads):
        return pad(x, pads, mode)
    return rule


def _index_select(x, dim, index):
    return jnp.take(x, index, axis=dim)


def _any_all(fn):
    def rule(x, dim=None, keepdim=False):
        return fn(x, axis=None if dim is None else tuple(_tuple(dim, 1)), keepdims=keepdim)
    return rule


def _logsumexp(x, dim, keepdim=False):
    return jax.scipy.special.logsumexp(x, axis=tuple(_tuple(dim, 1)), keepdims=keepdim)


def _rms_norm(x, normalized_shape, weight=None, eps=None):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    eps = float(jnp.finfo(x.dtype).eps) if eps is None else eps
    y = x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + eps)
    return y if weight is None else y * weight


def _channel_shuffle(x, groups):
    n, c = x.shape[:2]
    y = x.reshape((n, groups, c // groups) + x.shape[2:])
    return jnp.swapaxes(y, 1, 2).reshape(x.shape)


def _cosine_similarity(x1, x2, dim=1, eps=1e-8):
    # PyTorch: sum(x1 * x2) / sqrt(clamp_min(|x1|^2 * |x2|^2, eps^2))
    w12 = jnp.sum(x1 * x2, axis=dim)
    n12 = jnp.sum(x1 * x1, axis=dim) * jnp.sum(x2 * x2, axis=dim)
    return w12 / jnp.sqrt(jnp.maximum(n12, eps * eps))


def _diagonal_scatter(x, src, offset=0, dim1=0, dim2=1):
    """``x`` with its diagonal (``torch.diagonal(x, offset, dim1, dim2)``, last axis of
    ``src``) replaced by ``src``."""
    y = jnp.moveaxis(x, (dim1, dim2), (-2, -1))
    n = src.shape[-1]
    r = np.arange(n) + max(-offset, 0)
    c = np.arange(n) + max(offset, 0)
    return jnp.moveaxis(y.at[..., r, c].set(src), (-2, -1), (dim1, dim2))
