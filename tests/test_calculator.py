"""Tests of rfjax.calculator: the forward closed form, the exact backward intervals (with
upsampling), their agreement, and every error a user can make with a layer spec or a chain."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rfjax
from rfjax.calculator import (
    LayerSpec,
    receptive_field,
    receptive_interval,
    receptive_size,
)
from rfjax.models.camvid import CAMVID_LAYERS, CAMVID_TRF

L = LayerSpec


def _brute_interval(layers, q: int, pads_lo) -> tuple[int, int]:
    """One axis, by enumerating every input unit reached (an oracle independent of the
    calculator's recurrence; ``pads_lo``: the resolved lo padding of each layer)."""
    units = {q}
    for spec, plo in zip(reversed(layers), reversed(pads_lo), strict=True):
        if spec.upsample > 1:
            units = {p // spec.upsample for p in units}
        else:
            units = {spec.stride * p - plo + t * spec.dilation
                     for p in units for t in range(spec.kernel)}
    return min(units), max(units)


# ------------------------------------------------------------------------ forward == backward


@st.composite
def chains(draw):
    """(layers, ndim, input_size): convolutions / poolings with any kernel, stride, dilation
    and padding (int, per-axis (lo, hi) pairs, SAME, VALID), no upsampling."""
    ndim = draw(st.integers(1, 2))
    n_layers = draw(st.integers(1, 5))
    layers = []
    for _ in range(n_layers):
        k = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
        s = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
        d = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
        mode = draw(st.sampled_from(["int", "pairs", "SAME", "VALID"]))
        if mode == "int":
            pad = draw(st.integers(-1, 3))
        elif mode == "pairs":
            pad = tuple((draw(st.integers(-1, 3)), draw(st.integers(-1, 3)))
                        for _ in range(ndim))
        else:
            pad = mode
        # an int when every axis agrees, else the tuple: both spellings get exercised
        k, s, d = (v[0] if len(set(v)) == 1 and draw(st.booleans()) else v for v in (k, s, d))
        layers.append(L(k, s, pad, d))
    input_size = tuple(draw(st.integers(200, 400)) for _ in range(ndim))
    return layers, ndim, input_size


@settings(max_examples=150, deadline=None, database=None)
@given(chains(), st.data())
def test_interval_recurrence_equals_forward_closed_form(chain, data):
    layers, ndim, input_size = chain
    try:
        fwd = receptive_field(layers, input_size=input_size, ndim=ndim)
    except ValueError as e:  # the chain empties the input: not this test's case
        assert "output would be empty" in str(e)
        return
    assert receptive_size(layers, input_size=input_size, ndim=ndim) == fwd.size
    for _ in range(3):
        q = tuple(data.draw(st.integers(-20, 40)) for _ in range(ndim))
        back = receptive_interval(layers, q, input_size=input_size, ndim=ndim)
        assert back == fwd.region(q)
        for a in range(ndim):
            assert back[a] == (q[a] * fwd.stride[a] - fwd.padding[a],
                               q[a] * fwd.stride[a] - fwd.padding[a] + fwd.size[a] - 1)
    # jumps: J_1 = 1, J_l = s_1 ... s_{l-1}, per axis
    strides = [s.stride if isinstance(s.stride, tuple) else (s.stride,) * ndim for s in layers]
    want = [tuple(math.prod(st_[a] for st_ in strides[:i]) for a in range(ndim))
            for i in range(len(layers))]
    assert list(fwd.jumps) == want


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(-1, 2)),
    st.integers(2, 3)), min_size=1, max_size=6), st.integers(-30, 30))
def test_interval_equals_brute_force_with_upsampling(raw, q):
    """Exact intervals against an enumeration of the units reached, upsampling included; the
    widest over one period of positions is the widest over all positions."""
    layers, pads = [], []
    for r in raw:
        if isinstance(r, int):
            layers.append(L(upsample=r))
            pads.append(0)
        else:
            k, s, d, p = r
            layers.append(L(k, s, p, d))
            pads.append(p)
    assert receptive_interval(layers, q, ndim=1)[0] == _brute_interval(layers, q, pads)
    period = math.prod(s.upsample for s in layers)
    widths = [hi - lo + 1 for lo, hi in
              (_brute_interval(layers, p, pads) for p in range(-2 * period, 3 * period))]
    assert receptive_size(layers, ndim=1) == (max(widths),)
    if period == 1:
        assert receptive_size(layers, ndim=1) == receptive_field(layers, ndim=1).size


def test_same_padding_conventions():
    # stride 1: lo = (ke - 1) // 2 whatever the input size (flax/JAX SAME), so no input_size
    assert receptive_interval([L(4, 1, "SAME")], 10, ndim=1) == ((9, 12),)
    assert receptive_interval([L(3, 1, "SAME", 3)], 0, ndim=1) == ((-3, 3),)
    assert receptive_interval([L(4, 1, "same")], 10, ndim=1) == ((9, 12),)  # any case
    # strided SAME depends on the input size: JAX pads (0, 1) for n = 8, (1, 1) for n = 9
    assert receptive_interval([L(3, 2, "SAME")], 0, input_size=8, ndim=1) == ((0, 2),)
    assert receptive_interval([L(3, 2, "SAME")], 0, input_size=9, ndim=1) == ((-1, 1),)
    # VALID == 0; an int pads both sides; only lo moves the region, hi the output size
    assert receptive_field([L(3, 2, "VALID")], 9, ndim=1).layers[-1][4] == (4,)
    r = receptive_field([L(3, 2, ((1, 3),))], 9, ndim=1)
    assert (r.padding, r.layers[-1][4], r.region(0)) == ((1,), (6,), ((-1, 1),))


# ------------------------------------------------------------------------ upsampling: CamVid


def test_camvid_chain_numbers():
    # forward closed form up to the bottleneck (the module docstring's numbers)
    enc = receptive_field(CAMVID_LAYERS[:9], ndim=1)
    assert (enc.size, enc.stride, enc.padding) == ((36,), (8,), (14,))
    mid = receptive_field(CAMVID_LAYERS[:11], ndim=1)
    assert (mid.size, mid.stride, mid.padding) == ((132,), (8,), (62,))
    # past the upsamplings, per position (period 8 = 2 * 2 * 2)
    got = [receptive_interval(CAMVID_LAYERS, q, ndim=1)[0] for q in range(16)]
    assert got[:8] == [(-78, 77), (-78, 77), (-78, 85), (-78, 85), (-78, 85), (-78, 85),
                       (-70, 85), (-70, 85)]
    assert got[8:] == [(lo + 8, hi + 8) for lo, hi in got[:8]]
    assert receptive_interval(CAMVID_LAYERS, (100, 97)) == ((18, 181), (18, 173))
    assert receptive_size(CAMVID_LAYERS) == (164, 164) and CAMVID_TRF == 164
    with pytest.raises(ValueError, match="up3.*upsamples.*receptive_interval"):
        receptive_field(CAMVID_LAYERS)


def test_upsampling_per_axis_and_output_sizes():
    # upsample only the second axis; the first convolves
    chain = [L((3, 1), 1, "SAME", upsample=(1, 2)), L(3, 1, "SAME")]
    assert receptive_interval(chain, (5, 0)) == ((3, 7), (-1, 0))
    assert receptive_size(chain) == (5, 2)
    # stride 2 then x2 upsampling: the jump is back to 1, the region alternates
    chain = [L(2, 2, 0), L(upsample=2), L(3, 1, 1)]
    assert [receptive_interval(chain, q, ndim=1)[0] for q in range(4)] == [
        (-2, 1), (0, 3), (0, 3), (2, 5)]
    # input_size: the upsampling doubles the size (for SAME of later strided layers)
    assert receptive_interval([L(upsample=2), L(3, 2, "SAME")], 0, input_size=4,
                              ndim=1) == ((0, 1),)


# ------------------------------------------------------------------------ public API, compat


def test_public_api_and_backward_compatible_specs():
    assert rfjax.LayerSpec is LayerSpec
    assert rfjax.receptive_interval is receptive_interval
    assert rfjax.receptive_size is receptive_size
    # positional order kernel, stride, padding, dilation, name; upsample keyword only
    s = L(3, 2, 1, 2, "c")
    assert (s.kernel, s.stride, s.padding, s.dilation, s.name, s.upsample) == (3, 2, 1, 2, "c", 1)
    with pytest.raises(TypeError):
        L(1, 1, 0, 1, "u", 2)
    # dicts and tuples of fields are layers too
    a = receptive_field([{"kernel": 3, "padding": 1}, (2, 2, 0)], input_size=10)
    b = receptive_field([L(3, 1, 1), L(2, 2, 0)], input_size=10)
    assert a == b and a.size == (4, 4) and a.layers[-1][4] == (5, 5)
    assert receptive_size([{"upsample": 2}, (3, 1, 1)], ndim=1) == (2,)
    # README's example
    vgg16 = []
    for n in (2, 2, 3, 3, 3):
        vgg16 += [L(kernel=3, stride=1, padding=1)] * n + [L(2, 2, 0)]
    r = receptive_field(vgg16, input_size=224)
    assert (r.size, r.stride, r.padding) == ((212, 212), (32, 32), (90, 90))
    assert r.jumps[0] == (1, 1) and r.jumps[-1] == (16, 16) and len(r.jumps) == len(vgg16)
    assert r.region((0, 1)) == ((-90, 121), (-58, 153))
    assert receptive_interval(vgg16, (0, 1)) == r.region((0, 1))


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("field", ["kernel", "stride", "dilation", "upsample"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, (), (3, 0), "3", None])
def test_spec_rejects_non_positive_or_non_int_sizes(field, bad):
    with pytest.raises(ValueError, match=f"LayerSpec 'x': {field} must be an int >= 1"):
        L(**{field: bad, "name": "x"})


@pytest.mark.parametrize("bad", ["FULL", 1.5, (), ((1, 2, 3),), ((1.0, 2),), None, True])
def test_spec_rejects_bad_padding(bad):
    with pytest.raises(ValueError, match="padding="):
        L(3, 1, bad)


def test_spec_errors():
    with pytest.raises(ValueError, match="kernel has 3, stride has 2"):
        L((3, 3, 3), (1, 2))
    with pytest.raises(ValueError, match="kernel has 2, padding has 1"):
        L((3, 3), 1, ((1, 1),))
    with pytest.raises(TypeError, match="name must be a str"):
        L(3, name=7)
    # upsampling layers read one unit: no kernel, stride, dilation or padding on that axis
    for kw in ({"kernel": 3}, {"stride": 2}, {"dilation": 2}, {"padding": 1},
               {"padding": ((0, 1),)}):
        with pytest.raises(ValueError, match="upsampling layer .*kernel, stride and dilation "
                                             "must be 1 and the padding 0"):
            L(**kw, upsample=2)
    with pytest.raises(ValueError, match="upsampling layer"):
        L((1, 3), upsample=(1, 2))
    assert L(upsample=2, padding="SAME").upsample == 2  # SAME of a 1-tap kernel is 0
    assert L((3, 1), upsample=(1, 2)).kernel == (3, 1)  # the other axis may convolve


def test_chain_errors():
    for fn in (receptive_field, receptive_size):
        with pytest.raises(ValueError, match="chain is empty"):
            fn([])
        with pytest.raises(TypeError, match="layer 1: a layer must be a LayerSpec"):
            fn([L(3), object()])
        with pytest.raises(TypeError, match="one LayerSpec"):
            fn(L(3))
        with pytest.raises(TypeError, match="kernal"):
            fn([{"kernal": 3}])
    with pytest.raises(ValueError, match="chain is empty"):
        receptive_interval([], 0)
    # per-axis tuples against the chain's number of axes
    with pytest.raises(ValueError, match=r"layer 1 \('b'\): kernel=\(3, 3, 3\) has 3 entries; "
                                         "the chain has 2 spatial axes"):
        receptive_field([L(3, name="a"), L((3, 3, 3), name="b")], input_size=(8, 8))
    with pytest.raises(ValueError, match="padding=.* has 1 entries; the chain has 2"):
        receptive_size([L(3, 1, ((1, 1),))], ndim=2)
    for bad in (0, "2", 1.0):
        with pytest.raises(ValueError, match="ndim must be an int >= 1"):
            receptive_field([L(3)], ndim=bad)
    for bad in (0, (8, 0), (8, 8, 8), 8.0):
        with pytest.raises(ValueError, match="input_size must be an int >= 1"):
            receptive_field([L(3)], input_size=bad, ndim=2)
    for bad in ((1, 2, 3), 1.5, (1, 2.0)):
        with pytest.raises(ValueError, match="position/unit must be an int or a tuple of 2"):
            receptive_interval([L(3)], bad, ndim=2)
    with pytest.raises(ValueError, match="position/unit"):
        receptive_field([L(3)]).region((1, 2, 3))
    # strided SAME needs the input size; an input too small for the chain
    with pytest.raises(ValueError, match=r"layer 0 \('s'\): 'SAME' padding of a strided layer "
                                         "depends on the input size: pass input_size"):
        receptive_interval([L(3, 2, "SAME", name="s")], 0)
    with pytest.raises(ValueError, match="layer 1: the output would be empty on axis 0"):
        receptive_field([L(3), L(3)], input_size=4, ndim=1)
    with pytest.raises(ValueError, match="upsamples"):
        receptive_field([L(3), L(upsample=2)])
