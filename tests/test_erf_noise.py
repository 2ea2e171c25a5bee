"""rfjax.erf flags maps that are rounding noise (NoiseMapWarning, ERF.noise): the channel sum
of a LayerNorm output is constant, so its gradient is zero up to rounding."""

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rfjax
from rfjax.effective import NoiseMapWarning, erf, erf_merge


class ConvLayerNorm(nn.Module):
    """Two convolutions, then a LayerNorm (unit gain, zero bias: its channels sum to zero)."""

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Conv(16, (3, 3))(x))
        return nn.LayerNorm()(nn.Conv(16, (3, 3))(x))


class ConvStack(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.relu(nn.Conv(8, (3, 3))(x))
        return x


def _apply(model, x):
    return functools.partial(model.apply, model.init(jax.random.key(1), x[:1]))


def _erf(fn, x, **kw):
    """``erf`` with every warning recorded: ``(result, [warning categories])``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = erf(fn, x, progress=False, **kw)
    return r, [w.category for w in caught]


X = jax.random.normal(jax.random.key(0), (3, 12, 12, 3))


@pytest.mark.parametrize("kw", [{}, {"crop": "none"}, {"convention": "openerf"},
                                {"method": "vmap"}])
def test_layernorm_output_is_flagged_as_noise(kw):
    fn = _apply(ConvLayerNorm(), X)
    r, cats = _erf(fn, X, **kw)
    # One warning, the noise one: the crop's check does not mistake two roundings of zero
    # for a crop that changes the gradient.
    assert cats == [NoiseMapWarning]
    assert r.noise is True
    assert float(jnp.max(r.map)) < 1e-5  # it is noise indeed
    with pytest.warns(NoiseMapWarning, match=r"channels=0"):
        erf(fn, X, progress=False, **kw)


def test_one_channel_of_a_layernorm_output_is_not_noise():
    fn = _apply(ConvLayerNorm(), X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = erf(fn, X, channels=0, progress=False)
        r2 = erf(fn, X, channels=(0, 3), progress=False)  # no cancellation in two channels
    assert r.noise is False and r2.noise is False
    assert float(jnp.max(r.map)) > 1e-2


def test_a_conv_stack_is_not_noise():
    fn = _apply(ConvStack(), X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kw in ({}, {"crop": "none"}, {"convention": "replknet"}):
            assert erf(fn, X, progress=False, **kw).noise is False


def _pair(delta):
    """Channels ``c`` and ``-c + delta * d``: their sum's gradient is ``delta * grad d``."""
    kc = jax.random.normal(jax.random.key(2), (3, 3, 3, 1))
    kd = jax.random.normal(jax.random.key(3), (3, 3, 3, 1))

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def fn(x):
        c = jnp.tanh(conv(x, kc))
        return jnp.concatenate([c, -c + delta * jnp.tanh(conv(x, kd))], axis=-1)

    return fn


def test_the_criterion_is_rounding_level_not_small():
    # An exactly cancelling sum: its map is exactly zero, and flagged.
    r, cats = _erf(_pair(0.0), X, crop="none")
    assert cats == [NoiseMapWarning] and r.noise and float(jnp.max(r.map)) == 0.0
    # A sum that cancels to 1e-2 (far above sqrt(eps) = 3.5e-4 in float32) is a real ERF.
    r, cats = _erf(_pair(1e-2), X, crop="none")
    assert cats == [] and not r.noise and float(jnp.max(r.map)) > 0


def test_a_unit_that_depends_on_nothing_is_not_noise():
    r, cats = _erf(lambda x: jnp.zeros_like(x[..., :2]) + 1.0, X, crop="none")
    assert cats == [] and not r.noise and float(jnp.max(r.map)) == 0.0


def test_check_noise_off_merge_and_export():
    fn = _apply(ConvLayerNorm(), X)
    r, cats = _erf(fn, X, check_noise=False, crop="none")
    assert cats == [] and r.noise is False
    noisy, _ = _erf(fn, X, crop="none")
    assert erf_merge(r, noisy).noise and noisy.merge(noisy).noise
    assert rfjax.NoiseMapWarning is NoiseMapWarning and issubclass(NoiseMapWarning, UserWarning)
    assert "NoiseMapWarning" in rfjax.__all__
    np.testing.assert_array_equal(np.asarray(r.map), np.asarray(noisy.map))
