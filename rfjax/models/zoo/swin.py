"""Swin Transformer (Liu et al., 2021; torchvision's ``swin_t`` layout) features.

Inputs ``(N, H, W, C)`` (NHWC); every stage keeps the tokens on the 2-D grid, ``(N, h, w, D)``.
The shifted-window attention follows torchvision's ``shifted_window_attention``: pad the map to
a multiple of the window (bottom/right, zeros), cyclic shift by ``-shift`` (``jnp.roll``),
partition into non-overlapping windows, multi-head attention inside each window with a
learned relative position bias and, when shifted, the standard additive mask (-100 between
tokens that were not neighbours before the roll), reverse the partition, roll back, crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import Array

from rfjax.models.zoo.common import Act, _conv, _spatial


def gelu(x: Array) -> Array:
    """Exact (erf) GELU, torchvision's ``nn.GELU()`` default."""
    return nn.gelu(x, approximate=False)


def _ln(name: str) -> nn.LayerNorm:
    # torchvision's Swin: nn.LayerNorm(eps=1e-5).
    return nn.LayerNorm(epsilon=1e-5, name=name)


def _window_geometry(h: int, w: int, window: int, shift: int):
    """Per axis: the effective window (the map's size when it is not larger than the window)
    and shift (0 there), and the bottom/right padding to a multiple of the window."""
    wins, shifts, pads = [], [], []
    for n in (h, w):
        win = min(window, n)
        wins.append(win)
        shifts.append(shift if n > window else 0)
        pads.append(-n % win)
    return tuple(wins), tuple(shifts), tuple(pads)


def _relative_position_index(wins: tuple[int, int], window: int) -> np.ndarray:
    """``(T, T)`` indices into the ``((2*window-1)**2, heads)`` bias table, ``T = wh*ww``."""
    coords = np.stack(np.meshgrid(np.arange(wins[0]), np.arange(wins[1]), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, T, T), >= 0
    return rel[0] * (2 * window - 1) + rel[1]


def _shift_mask(padded: tuple[int, int], wins: tuple[int, int],
                shifts: tuple[int, int]) -> np.ndarray:
    """``(num_windows, T, T)``: 0 between tokens of the same region before the roll, -100
    otherwise (torchvision's ``attn_mask``; regions split each axis at ``-window`` and
    ``-shift``)."""
    labels = []
    for n, win, s in zip(padded, wins, shifts, strict=True):
        r = np.arange(n)
        labels.append(np.where(r < n - win, 0, np.where(r < n - s, 1, 2)) if s else 0 * r)
    region = labels[0][:, None] * 3 + labels[1][None, :]  # (Hp, Wp)
    hp, wp = padded
    region = region.reshape(hp // wins[0], wins[0], wp // wins[1], wins[1])
    region = region.transpose(0, 2, 1, 3).reshape(-1, wins[0] * wins[1])
    return np.where(region[:, None, :] != region[:, :, None], -100.0, 0.0)


def _partition(x: Array, wins: tuple[int, int]) -> Array:
    """``(N, H, W, C)`` -> ``(N, num_windows, wh*ww, C)``, windows in row-major order."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // wins[0], wins[0], w // wins[1], wins[1], c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, wins[0] * wins[1], c)


def _unpartition(x: Array, wins: tuple[int, int], h: int, w: int) -> Array:
    """Inverse of :func:`_partition` onto an ``(N, h, w, C)`` map."""
    n, c = x.shape[0], x.shape[-1]
    x = x.reshape(n, h // wins[0], w // wins[1], wins[0], wins[1], c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


class WindowAttention(nn.Module):
    """(Shifted) window multi-head self-attention on ``(N, H, W, C)`` -> same shape.

    ``qkv``: Dense ``C -> 3C`` (bias), split as ``(3, heads, C/heads)``; logits ``q k^T /
    sqrt(C/heads)`` plus the relative position bias (a ``((2*window-1)**2, heads)`` table)
    and, when shifted, the -100 mask; softmax over the window; ``proj``: Dense ``C -> C``.
    """

    heads: int
    window: int = 7
    shift: int = 0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, h, w, c = x.shape
        if c % self.heads:
            raise ValueError(f"WindowAttention: {c} channels are not divisible by "
                             f"heads={self.heads}")
        wins, shifts, pads = _window_geometry(h, w, self.window, self.shift)
        if any(pads):
            x = jnp.pad(x, ((0, 0), (0, pads[0]), (0, pads[1]), (0, 0)))
        hp, wp = h + pads[0], w + pads[1]
        shifted = any(shifts)
        if shifted:
            x = jnp.roll(x, (-shifts[0], -shifts[1]), axis=(1, 2))
        t = _partition(x, wins)  # (N, nW, T, C)
        nw, tt, d = t.shape[1], t.shape[2], c // self.heads
        qkv = nn.Dense(3 * c, name="qkv")(t).reshape(n, nw, tt, 3, self.heads, d)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        logits = jnp.einsum("nwqhd,nwkhd->nwhqk", q * d**-0.5, k)
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(
            0.02), ((2 * self.window - 1) ** 2, self.heads))
        index = _relative_position_index(wins, self.window)
        bias = jnp.take(table, jnp.asarray(index.reshape(-1)), axis=0)
        logits = logits + bias.reshape(tt, tt, self.heads).transpose(2, 0, 1)
        if shifted:
            mask = _shift_mask((hp, wp), wins, shifts).astype(logits.dtype)
            logits = logits + mask[None, :, None]
        attn = nn.softmax(logits, axis=-1)
        o = jnp.einsum("nwhqk,nwkhd->nwqhd", attn, v).reshape(n, nw, tt, c)
        x = _unpartition(nn.Dense(c, name="proj")(o), wins, hp, wp)
        if shifted:
            x = jnp.roll(x, shifts, axis=(1, 2))
        return x[:, :h, :w]


class SwinBlock(nn.Module):
    """Swin block (v1, pre-norm) on ``(N, H, W, C)``: ``x + WindowAttention(LN(x))``, then
    ``x + MLP(LN(x))`` with MLP Dense ``C -> mlp_ratio*C``, ``act``, Dense back to ``C``."""

    heads: int
    window: int = 7
    shift: int = 0
    mlp_ratio: float = 4.0
    act: Act = gelu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        x = x + WindowAttention(self.heads, self.window, self.shift, name="attn")(
            _ln("norm1")(x))
        y = nn.Dense(int(c * self.mlp_ratio), name="mlp_fc1")(_ln("norm2")(x))
        return x + nn.Dense(c, name="mlp_fc2")(self.act(y))


class PatchMerging(nn.Module):
    """``(N, H, W, C)`` -> ``(N, ceil(H/2), ceil(W/2), 2C)``: pad H, W to even (bottom/right),
    concatenate each 2x2 neighbourhood as torchvision does (``x[0::2, 0::2]``,
    ``x[1::2, 0::2]``, ``x[0::2, 1::2]``, ``x[1::2, 1::2]``), LayerNorm, Dense ``4C -> 2C``
    without bias."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _, h, w, c = x.shape
        if h % 2 or w % 2:
            x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                             x[:, 1::2, 1::2]], axis=-1)
        return nn.Dense(2 * c, use_bias=False, name="reduction")(_ln("norm")(x))


class SwinTransformer(nn.Module):
    """Swin Transformer features; the defaults are Swin-T (torchvision ``swin_t``).

    Patch embedding: conv ``patch x patch`` stride ``patch`` (pad 0, bias) to ``embed_dim``
    channels, LayerNorm. Stage ``s`` (``s = 0..3``): a :class:`PatchMerging` first when
    ``s > 0`` (the grid halves, the channels double: ``embed_dim * 2**s``), then
    ``depths[s]`` :class:`SwinBlock` with ``heads[s]`` heads, alternating regular windows
    (even blocks) and windows shifted by ``window // 2`` (odd blocks). A final LayerNorm.
    Where the map is not larger than the window along an axis, the window is the map's size
    there and that axis is not shifted (at 224x224 the last stage's 7x7 map is one window).

    Output (NHWC): ``(N, H/32, W/32, 8 * embed_dim)`` for the full model (``(N, 7, 7, 768)``
    for Swin-T at 224, 27,519,354 parameters: torchvision's 28,288,354 less its 769,000-
    parameter head); with ``stages=s`` the output of stage ``s``'s last block (no final norm),
    ``(N, H / (patch * 2**(s-1)), ..., embed_dim * 2**(s-1))``; ``s=0``: the embedding.

    The windows are fixed by position, so the receptive field is not one translation-
    invariant box: after a regular and a shifted block, a token's field is the union of the
    regular windows met by its shifted window, and near the border the cyclic shift joins
    the first and last windows (a field with a hole; the -100 mask makes those weights tiny,
    not zero).

    Attributes:
      patch: patch size of the embedding (4).
      embed_dim: channels of stage 1 (96); a width knob, the field does not depend on it.
      depths: blocks per stage ((2, 2, 6, 2)).
      heads: attention heads per stage ((3, 6, 12, 24)); ``embed_dim * 2**s`` must be
        divisible by ``heads[s]``.
      window: window size (7); shift ``window // 2``.
      mlp_ratio: MLP hidden width over the channels (4).
      stages: number of stages to run (default all).
      act: the MLP nonlinearity (exact GELU).
    """

    patch: int = 4
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    heads: Sequence[int] = (3, 6, 12, 24)
    window: int = 7
    mlp_ratio: float = 4.0
    stages: int | None = None
    act: Act = gelu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "SwinTransformer", 2)
        if len(self.heads) != len(self.depths):
            raise ValueError(f"SwinTransformer: heads {tuple(self.heads)} and depths "
                             f"{tuple(self.depths)} need one entry per stage")
        stages = len(self.depths) if self.stages is None else self.stages
        if not 0 <= stages <= len(self.depths):
            raise ValueError(f"SwinTransformer: stages must be in 0..{len(self.depths)}, "
                             f"got {self.stages}")
        if self.window < 1:
            raise ValueError(f"SwinTransformer: window must be >= 1, got {self.window}")
        x = _conv(self.embed_dim, (self.patch, self.patch), self.patch, 0,
                  name="patch_embed")(x)
        x = _ln("patch_norm")(x)
        for s in range(stages):
            if s > 0:
                x = PatchMerging(name=f"merge{s}")(x)
            for i in range(self.depths[s]):
                shift = 0 if i % 2 == 0 else self.window // 2
                x = SwinBlock(self.heads[s], self.window, shift, self.mlp_ratio, self.act,
                              name=f"stage{s + 1}_block{i + 1}")(x)
        if stages == len(self.depths):
            x = _ln("norm")(x)
        return x
