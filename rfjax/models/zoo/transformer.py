"""Attention models with global fields: self-attention over a conv feature map, a pre-LN
transformer block and a small ViT. Inputs ``(N, H, W, C)``; the ViT returns tokens ``(N, T, D)``.
"""

from __future__ import annotations

import flax.linen as nn
from jax import Array

from rfjax.models.zoo.common import Act, _conv, _spatial


class SpatialAttentionNet(nn.Module):
    """Two conv 3x3 s2 p1, then self-attention over the ``h*w`` positions, conv 1x1.

    Output ``(N, ceil(H/4), ceil(W/4), features)``: spatial, but every unit is global after
    the attention.
    """

    features: int = 8
    heads: int = 2
    act: Act = nn.relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "SpatialAttentionNet", 2)
        x = self.act(_conv(self.features, (3, 3), 2, 1, name="conv1")(x))
        x = self.act(_conv(self.features, (3, 3), 2, 1, name="conv2")(x))
        n, h, w, c = x.shape
        t = x.reshape(n, h * w, c)
        t = t + nn.MultiHeadDotProductAttention(self.heads, name="attn")(t, t)
        x = t.reshape(n, h, w, c)
        return _conv(self.features, (1, 1), name="proj")(x)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block on ``(N, T, D)``: x + MHSA(LN(x)); x + MLP(LN(x))."""

    heads: int = 2
    mlp_ratio: int = 2
    act: Act = nn.gelu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        y = nn.LayerNorm(name="ln1")(x)
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attn")(y, y)
        y = nn.LayerNorm(name="ln2")(x)
        y = nn.Dense(d, name="mlp_out")(self.act(nn.Dense(self.mlp_ratio * d, name="mlp_in")(y)))
        return x + y


class ViT(nn.Module):
    """Small ViT: patch embedding, position embedding, ``depth`` transformer blocks.

    Patch embedding is a conv with kernel = stride = ``patch`` (pad 0); tokens ``(N, T, D)``
    with ``T = (H/patch) * (W/patch)`` in row-major order, plus a learned position embedding
    ``(1, T, D)``. Output: the tokens after block ``upto`` (default ``depth``; 0 = after the
    embedding, where token ``t`` sees one ``patch x patch`` patch), ``(N, T, dim)``; with
    ``all_layers=True``, a tuple of ``depth + 1`` such arrays (embedding, block 1, ...).
    Every token is global after the first attention. H, W must be multiples of ``patch``.
    """

    patch: int = 4
    dim: int = 16
    depth: int = 2
    heads: int = 2
    mlp_ratio: int = 2
    upto: int | None = None
    all_layers: bool = False
    act: Act = nn.gelu

    @nn.compact
    def __call__(self, x: Array) -> Array | tuple[Array, ...]:
        _spatial(x, "ViT", 2)
        n, h, w, _ = x.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"ViT: H and W must be multiples of patch={self.patch}, "
                             f"got shape {x.shape}")
        upto = self.depth if self.upto is None else self.upto
        if not 0 <= upto <= self.depth:
            raise ValueError(f"ViT: upto must be in 0..{self.depth}, got {self.upto}")
        x = _conv(self.dim, (self.patch, self.patch), self.patch, 0, name="patch_embed")(x)
        t = x.reshape(n, -1, self.dim)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1,) + t.shape[1:])
        t = t + pos
        outs = [t]
        for i in range(upto if not self.all_layers else self.depth):
            t = TransformerBlock(self.heads, self.mlp_ratio, self.act, name=f"block{i + 1}")(t)
            outs.append(t)
        return tuple(outs) if self.all_layers else t
