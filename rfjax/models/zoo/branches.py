"""Multi-branch graphs: strided branches whose fields are not centred alike (``MisalignedBlock``)
and an Inception block with cross-shaped branches. Inputs ``(N, *spatial, C)``.
"""

from __future__ import annotations

import flax.linen as nn
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


class MisalignedBlock(nn.Module):
    """Two strided branches joined by ``add``, whose per-unit fields are not centred alike.

    Branch A: conv ``kernel_a`` stride ``stride`` padding ``padding_a``; branch B: conv
    ``kernel_b`` stride ``stride`` padding ``padding_b`` (negative padding crops). Then
    ``tail`` 3x3 pad-1 convolutions. Default (2-D, stride 2): A is 3x3 pad ((0, 1), (0, 1)),
    seeing ``[2u, 2u+2]``; B is 1x1 pad 0, seeing ``{2u}``. With ``kernel_b=1, kernel_a=1,
    padding_b=((-2, 2), (-2, 2))`` the union is ``{2u, 2u+2}``: a field with holes.
    Both branches must give the same output shape (else ``ValueError``; use even sizes).
    """

    kernel_a: int = 3
    padding_a: Padding = ((0, 1), (0, 1))
    kernel_b: int = 1
    padding_b: Padding = ((0, 0), (0, 0))
    stride: int = 2
    tail: int = 0
    features: int = 4
    act: Act = nn.relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        nd = _spatial(x, "MisalignedBlock")
        a = _conv(self.features, (self.kernel_a,) * nd, self.stride,
                  _pairs(self.padding_a, nd, "MisalignedBlock padding_a"), name="branch_a")(x)
        b = _conv(self.features, (self.kernel_b,) * nd, self.stride,
                  _pairs(self.padding_b, nd, "MisalignedBlock padding_b"), name="branch_b")(x)
        if a.shape != b.shape:
            raise ValueError(f"MisalignedBlock: branch outputs differ in shape ({a.shape} vs "
                             f"{b.shape}) for input {x.shape}; adjust paddings or input size")
        x = self.act(a + b)
        for i in range(self.tail):
            x = self.act(_conv(self.features, (3,) * nd, 1, 1, name=f"tail{i + 1}")(x))
        return x


class InceptionNet(nn.Module):
    """Stem conv 3x3 p1, then one Inception block of parallel branches, concatenated.

    Branches (all stride 1, centred): 1x1; 1x1 -> 3x3 p1; 1x1 -> 5x5 p2; pool 3 s1 p1 -> 1x1;
    and, if ``cross``, 1x7 p(0, 3) and 7x1 p(3, 0) as two separate branches. With ``cross``
    the field of a unit is not a box: 7x7 ∪ 3x9 ∪ 9x3 (centred; extent 9); without, 7x7.
    Output ``(N, H, W, features * (4 + 2 * cross))``.
    """

    features: int = 4
    cross: bool = True
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "InceptionNet", 2)
        _check_pool(self.pool, "InceptionNet")
        f = self.features
        x = self.act(_conv(f, (3, 3), 1, 1, name="stem")(x))
        b1 = self.act(_conv(f, (1, 1), name="b1x1")(x))
        b3 = self.act(_conv(f, (3, 3), 1, 1, name="b3x3")(
            self.act(_conv(f, (1, 1), name="b3x3_reduce")(x))))
        b5 = self.act(_conv(f, (5, 5), 1, 2, name="b5x5")(
            self.act(_conv(f, (1, 1), name="b5x5_reduce")(x))))
        bp = self.act(_conv(f, (1, 1), name="bpool_proj")(pool_nd(x, self.pool, 3, 1, 1)))
        branches = [b1, b3, b5, bp]
        if self.cross:
            branches.append(self.act(_conv(f, (1, 7), 1, ((0, 0), (3, 3)), name="b1x7")(x)))
            branches.append(self.act(_conv(f, (7, 1), 1, ((3, 3), (0, 0)), name="b7x1")(x)))
        return jnp.concatenate(branches, axis=-1)
