"""Upsampling nets: a down/up transposed-convolution net and a small U-Net. Inputs
``(N, *spatial, C)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from rfjax.models.zoo.common import (
    Act,
    Padding,
    _check_pool,
    _conv,
    _pairs,
    _spatial,
    pool_nd,
)


class TransposedConvNet(nn.Module):
    """Down then up: conv 3x3 s2 p1; transposed conv; conv 3x3 p1.

    The transposed convolution (``nn.ConvTranspose``, a ``conv_general_dilated`` with
    ``lhs_dilation=up_stride``) uses explicit padding on the dilated input: torchvision's
    ``ConvTranspose2d(k, s, padding=p, output_padding=q)`` is ``up_padding=((k-1-p,
    k-1-p+q),) * 2``. Default ``k=4, s=2, p=1``: output ``(N, H, W, features)`` for even H, W;
    every output unit sees 7 input pixels per axis, ``[u-3, u+3]`` for even ``u`` and
    ``[u-4, u+2]`` for odd ``u`` (not one uniform stride/padding). ``up_kernel=3,
    up_padding=((1, 2), (1, 2))`` gives per-unit sizes 7 (even ``u``) and 5 (odd ``u``).
    """

    features: int = 4
    up_kernel: int = 4
    up_stride: int = 2
    up_padding: Padding = ((2, 2), (2, 2))
    act: Act = nn.relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        nd = _spatial(x, "TransposedConvNet")
        x = self.act(_conv(self.features, (3,) * nd, 2, 1, name="down")(x))
        x = nn.ConvTranspose(self.features, (self.up_kernel,) * nd,
                             strides=(self.up_stride,) * nd,
                             padding=_pairs(self.up_padding, nd, "TransposedConvNet"),
                             name="up")(x)
        x = self.act(x)
        return self.act(_conv(self.features, (3,) * nd, 1, 1, name="conv")(x))


class UNet(nn.Module):
    """Small 2-D U-Net: two max-pool downsamplings, two upsamplings, skip concatenations.

    enc1: 2x conv 3x3 p1 (``f``); pool 2 s2; enc2: 2x conv (``2f``); pool 2 s2; bottleneck:
    2x conv (``4f``); up (x2) -> concat enc2 -> 2x conv (``2f``); up (x2) -> concat enc1 ->
    2x conv (``f``); conv 1x1 (``out_features``). ``upsample``: ``"transpose"``
    (``nn.ConvTranspose`` k2 s2, each output reads one input), ``"bilinear"`` or
    ``"nearest"`` (``jax.image.resize`` then a 1x1 conv). H and W must be multiples of 4.
    Output ``(N, H, W, out_features)``.
    """

    features: int = 4
    out_features: int = 3
    upsample: str = "transpose"
    act: Act = nn.relu
    pool: str = "max"

    def _double(self, x: Array, f: int, name: str) -> Array:
        x = self.act(_conv(f, (3, 3), 1, 1, name=f"{name}_a")(x))
        return self.act(_conv(f, (3, 3), 1, 1, name=f"{name}_b")(x))

    def _up(self, x: Array, f: int, name: str) -> Array:
        if self.upsample == "transpose":
            return nn.ConvTranspose(f, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)),
                                    name=name)(x)
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), self.upsample)
        return _conv(f, (1, 1), name=name)(x)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "UNet", 2)
        _check_pool(self.pool, "UNet")
        if self.upsample not in ("transpose", "bilinear", "nearest"):
            raise ValueError(f"UNet: upsample must be 'transpose', 'bilinear' or 'nearest', "
                             f"got {self.upsample!r}")
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"UNet: H and W must be multiples of 4, got shape {x.shape}")
        f = self.features
        e1 = self._double(x, f, "enc1")
        e2 = self._double(pool_nd(e1, self.pool, 2, 2), 2 * f, "enc2")
        bott = self._double(pool_nd(e2, self.pool, 2, 2), 4 * f, "bottleneck")
        d2 = self._double(jnp.concatenate([self._up(bott, 2 * f, "up2"), e2], -1), 2 * f,
                          "dec2")
        d1 = self._double(jnp.concatenate([self._up(d2, f, "up1"), e1], -1), f, "dec1")
        return _conv(self.out_features, (1, 1), name="head")(d1)
