"""PyTorch models through rfjax's front door, checked against PyTorch's own autograd.

The TRF oracle never uses JAX: the support of the float64 PyTorch gradient of a unit's channel
sum in a *surrogate* of the same module (activations replaced by the identity, max-pooling by
average pooling, weights made positive: no gradient can cancel or vanish), at corner, edge and
centre units. The ERF oracle is PyTorch autograd on the module itself, same weights.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import rfjax  # noqa: E402
from rfjax.adapters import pytorch as rt  # noqa: E402
from rfjax.adapters.oracle import grad_support, run  # noqa: E402


def torch_erf(module, x, unit, output=None, layer=None):
    """The paper's ERF with PyTorch autograd: mean over images of sum_c |d s_n / d x_n|."""
    module = module.eval()
    x = x.clone().requires_grad_(True)
    y = run(module, x, output, layer)
    y[(slice(None), slice(None)) + tuple(unit)].sum().backward()
    return x.grad.abs().sum(dim=1).mean(dim=0).numpy()


class Zoo(nn.Module):
    """Many operators at once: strided, dilated and grouped convs, BN, max-pool with ceil
    mode, average pool without padding counts, a transposed conv, bilinear upsampling,
    F.pad, a skip concatenation, an SE-style gate on a side branch and a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.avg = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.up = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        p = self.pool(h)
        p = p + F.gelu(self.dil(p))
        p = self.avg(p)
        u = self.up(p)
        u = F.interpolate(u, size=h.shape[-2:], mode="bilinear", align_corners=False)
        u = F.pad(u, (1, 0, 0, 1))[:, :, 1:, :-1]
        s = torch.sigmoid(self.gate(u.mean((2, 3), keepdim=True)))
        return self.head(torch.cat([h, u * s], dim=1))


def _same_output(module, x, rtol, atol):
    """The lowered module's output equals PyTorch's on ``x``."""
    fn, xn = rfjax.from_torch(module, x)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(fn(xn)), module(x).numpy(), rtol=rtol, atol=atol)


def _check_module(module, chw, rtol, atol):
    """Masks at ``(1, *chw)`` equal the gradient support; outputs on two random images equal
    PyTorch's."""
    _check_masks(module, (1,) + chw)
    _same_output(module, torch.randn((2,) + chw), rtol=rtol, atol=atol)


def _units(shape):
    H, W = shape
    return [(0, 0), (0, W // 2), (H // 2, W // 2), (H - 1, W - 1), (H // 3, W - 1)]


def _check_masks(module, shape, output=None, layer=None):
    torch.manual_seed(0)
    t = rfjax.trf(module, shape, output=output, layer=layer)
    for u in _units(t.output_shape):
        want = grad_support(module, shape, u, output, layer)
        got = t.mask(u)
        assert got.shape == want.shape
        assert (got == want).all(), (u, np.argwhere(got != want)[:5])
    return t


def test_masks_equal_pytorch_gradient_support_on_many_operators():
    torch.manual_seed(0)
    _check_masks(Zoo(), (1, 3, 29, 26))


def test_torchvision_resnet18_masks_and_known_field():
    tv = pytest.importorskip("torchvision")
    m = tv.models.resnet18()
    t = _check_masks(m, (1, 3, 64, 64), layer="layer3")
    assert (t.size, t.stride) == ((211, 211), (16, 16))  # 435 at layer4, 211 at layer3
    t4 = rfjax.trf(m, (1, 3, 224, 224), layer="layer4")
    assert (t4.size, t4.stride, t4.padding, t4.aligned) == ((435, 435), (32, 32), (217, 217),
                                                            True)


def test_erf_equals_pytorch_autograd():
    torch.manual_seed(1)
    m = Zoo().eval()
    x = torch.randn(5, 3, 29, 26)
    for unit in [(7, 6), (0, 12)]:
        want = torch_erf(m, x, unit)
        for crop in ("none", "auto"):
            got = np.asarray(rfjax.erf(m, x, unit=unit, crop=crop).map)
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * want.max())


def test_erf_of_a_torchvision_model_with_a_dict_output_and_a_layer():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    m = tv.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                            num_classes=3, aux_loss=False).eval()
    x = torch.randn(2, 3, 48, 40)
    want = torch_erf(m, x, (24, 20), output="out")
    got = np.asarray(rfjax.erf(m, x, unit=(24, 20), output="out").map)
    np.testing.assert_allclose(got, want, rtol=5e-4, atol=5e-5 * want.max())
    # an inner layer by its module path: the backbone's layer2 output (stride 8)
    want2 = torch_erf(m, x, (3, 2), layer="backbone.layer2")
    got2 = np.asarray(rfjax.erf(m, x, unit=(3, 2), layer="backbone.layer2").map)
    np.testing.assert_allclose(got2, want2, rtol=5e-4, atol=5e-5 * want2.max())


def test_vit_tokens_map_back_to_the_patch_grid():
    timm = pytest.importorskip("timm")
    m = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0,
                          global_pool="")
    t = rfjax.trf(m, (1, 3, 32, 32), grid=(4, 4), prefix_tokens=1)
    assert t.output_shape == (4, 4) and t.is_global == (True, True)
    # before the first attention block a patch token sees its own 8x8 patch only
    tp = rfjax.trf(m, (1, 3, 32, 32), layer="patch_embed", grid=(4, 4))
    assert (tp.size, tp.stride, tp.padding) == ((8, 8), (8, 8), (0, 0))
    assert tp.region((1, 2)) == ((8, 15), (16, 23))
    # the final LayerNorm makes the channel sum constant (its ERF is noise): one channel
    e = rfjax.erf(m, torch.randn(2, 3, 32, 32), unit=(1, 2), grid=(4, 4), prefix_tokens=1,
                  channels=0)
    assert e.map.shape == (32, 32) and not e.noise
    assert float(e.map.min()) > 0  # attention reaches every pixel


def test_table_rows_carry_module_paths():
    t = rfjax.trf(Zoo(), (1, 3, 29, 26))
    names = [r.name for r in t.layers]
    assert "Zoo/stem" in names and "Zoo/head" in names and "Zoo/up" in names
    assert "Zoo/head" in t.table()


def test_train_mode_is_restored_and_dropout_is_the_identity():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Dropout(0.5), nn.Conv2d(4, 2, 3))
    m.train()
    t = rfjax.trf(m, (1, 3, 12, 12))
    assert m.training and all(c.training for c in m.children())
    assert (t.size, t.stride, t.padding) == ((5, 5), (1, 1), (1, 1))
    x = torch.randn(3, 3, 12, 12)
    e = rfjax.erf(m, x, unit=(4, 4))
    assert m.training
    np.testing.assert_allclose(np.asarray(e.map), torch_erf(copy.deepcopy(m), x, (4, 4)),
                               rtol=1e-4, atol=1e-6)


def test_from_torch_matches_the_module_and_reads_current_weights():
    torch.manual_seed(3)
    m = Zoo().eval()
    x = torch.randn(2, 3, 29, 26)
    fn, xn = rfjax.from_torch(m, x)
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(np.asarray(fn(xn)), ref, rtol=1e-4, atol=1e-5)
    assert isinstance(xn, np.ndarray) and xn.shape == (2, 3, 29, 26)
    with torch.no_grad():  # trained in between: the next call sees the new weights
        m.head.weight.mul_(2.0)
        m.head.bias.zero_()
        ref2 = m(x).numpy()
    fn2, _ = rfjax.from_torch(m, x)
    np.testing.assert_allclose(np.asarray(fn2(xn)), ref2, rtol=1e-4, atol=1e-5)


def test_in_place_writes_through_slices():
    class Masked(nn.Module):
        def forward(self, x):
            m = x.new_zeros(x.shape[-2:])
            m[2:5, :] = 1.0  # in place on a view of a fresh tensor (Swin's attention mask)
            return x * m

    t = rfjax.trf(Masked(), (1, 1, 8, 8))
    assert t.mask((3, 3)).sum() == 1 and t.mask((0, 0)).sum() == 0


def test_unsupported_operator_and_bad_layer_errors():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.special.i0(x)

    with pytest.raises(rt.UnsupportedOperatorError, match="aten.special_i0"):
        rfjax.trf(Odd(), (1, 1, 8, 8))
    with pytest.raises(ValueError, match="layer 'nope'"):
        rfjax.trf(Zoo(), (1, 3, 16, 16), layer="nope")


def test_no_retrace_on_second_erf_call():
    m = Zoo().eval()
    x = torch.randn(2, 3, 29, 26)
    rfjax.erf(m, x, unit=(5, 5))
    entries = rfjax.callables.cache_size()
    prog = rt.program(m, (2, 3, 29, 26))
    assert rt.program(m, (2, 3, 29, 26)) is prog  # the export is cached per module and shape
    rfjax.erf(m, x, unit=(5, 5))
    assert rfjax.callables.cache_size() == entries


def test_erf_of_a_model_trained_saved_and_loaded_on_real_cifar(tmp_path):
    """A small CNN trained with PyTorch on real CIFAR-10 images, saved and loaded as a user
    would: rfjax's ERF on real test images is PyTorch autograd's, and training changed it."""
    import pickle
    from pathlib import Path

    raw = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / \
        "cifar-10-batches-py"
    if not raw.is_dir():
        pytest.skip(f"real data not available at {raw}")
    with open(raw / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    with open(raw / "test_batch", "rb") as f:
        t = pickle.load(f, encoding="bytes")

    def images(b, n):
        x = np.asarray(b[b"data"][:n], np.float32).reshape(n, 3, 32, 32) / 255.0
        return torch.from_numpy((x - 0.5) / 0.25)

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                             nn.Conv2d(32, 10, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())

    x, y = images(d, 512), torch.as_tensor(d[b"labels"][:512])
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(60):
        i = torch.arange(step * 64, step * 64 + 64) % 512
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), tmp_path / "cnn.pth")
    loaded = make()
    loaded.load_state_dict(torch.load(tmp_path / "cnn.pth", map_location="cpu",
                                      weights_only=True))
    test = images(t, 16)
    got = np.asarray(rfjax.erf(loaded, test, unit=(8, 8), layer="4").map)
    want = torch_erf(loaded, test, (8, 8), layer="4")
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * want.max())
    untrained = np.asarray(rfjax.erf(make(), test, unit=(8, 8), layer="4").map)
    assert np.abs(untrained / untrained.sum() - got / got.sum()).max() > 1e-3


def test_batch_statistics_of_an_explicit_functional_batch_norm():
    """timm's ScaledStdConv standardises its kernel with F.batch_norm(training=True)."""
    class StdConv(nn.Conv2d):
        def forward(self, x):
            w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                             training=True, momentum=0.0, eps=1e-5).reshape_as(self.weight)
            return F.conv2d(x, w, self.bias, self.stride, self.padding)

    torch.manual_seed(4)
    m = StdConv(3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 9, 9)
    _same_output(m, x, rtol=1e-4, atol=1e-5)
    assert rfjax.trf(m, (1, 3, 9, 9)).size == (3, 3)


def test_fourier_filters_and_complex_values():
    """A GFNet-style global filter (``rfft2``, a complex weight from ``view_as_complex``,
    ``irfft2``) and 1-D transforms along one axis: outputs equal PyTorch's; ``fft`` along the
    last axis mixes that axis only (masks = PyTorch's gradient support)."""
    class GlobalFilter(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 8, 5, 2) * 0.5)

        def forward(self, x):
            f = torch.fft.rfft2(x, dim=(2, 3), norm="ortho") * torch.view_as_complex(self.w)
            y = torch.fft.irfft2(f, s=(8, 8), dim=(2, 3), norm="ortho")
            return y + torch.fft.ifft(x, dim=2).real

    class Rows(nn.Module):
        def forward(self, x):
            return torch.fft.fft(x, dim=-1).abs() + x

    torch.manual_seed(6)
    m = GlobalFilter().eval()
    x = torch.randn(2, 4, 8, 8)
    _same_output(m, x, rtol=1e-4, atol=1e-5)
    assert rfjax.trf(m, (1, 4, 8, 8)).is_global == (True, True)
    t = _check_masks(Rows(), (1, 2, 6, 8))
    assert t.is_global == (False, True)


def test_bicubic_and_antialiased_resampling_use_pytorchs_own_weights():
    """F.interpolate bicubic (4 taps, clamped at the border) and antialiased bilinear/bicubic
    (timm resizes position embeddings with it): the masks and the ERF equal PyTorch's."""
    class Resample(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.pos = nn.Parameter(torch.randn(1, 4, 5, 5))
            self.b = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            h = F.interpolate(self.a(x), scale_factor=2.5, mode="bicubic")
            h = F.interpolate(h, size=(11, 9), mode="bilinear", antialias=True)
            h = h + F.interpolate(self.pos, size=h.shape[-2:], mode="bicubic", antialias=True)
            return self.b(F.interpolate(h, size=(13, 17), mode="bicubic", align_corners=True))

    torch.manual_seed(5)
    m = Resample().eval()
    t = _check_masks(m, (1, 3, 10, 8))
    assert not t.is_global[0] and t.mask((0, 0)).sum() < 80
    x = torch.randn(2, 3, 10, 8)
    want = torch_erf(m, x, (6, 8))
    got = np.asarray(rfjax.erf(m, x, unit=(6, 8)).map)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * want.max())
    from rfjax.adapters import pytorch_resample

    assert pytorch_resample._probed_matrices.cache_info().currsize > 0
    rfjax.clear_cache()  # the weights read off PyTorch are a cache like the others
    assert pytorch_resample._probed_matrices.cache_info().currsize == 0


def test_a_region_wrapped_by_autocast_runs_inline():
    """``with torch.autocast(..., enabled=False)`` inside forward (timm's EfficientViT
    attention) exports as a higher-order operator around a submodule: it runs inline."""
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.b = nn.Conv2d(4, 4, 3, padding=1, dilation=1)

        def forward(self, x):
            h = self.a(x)
            with torch.autocast(device_type="cpu", enabled=False):
                g = F.relu(self.b(h))
            return g * h

    torch.manual_seed(6)
    m = Wrapped().eval()
    _check_masks(m, (1, 3, 12, 10))
    x = torch.randn(2, 3, 12, 10)
    want = torch_erf(m, x, (4, 3))
    got = np.asarray(rfjax.erf(m, x, unit=(4, 3)).map)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * want.max())


def test_addcmul_and_addcdiv():
    """ResMLP's Affine is ``torch.addcmul(beta, alpha, x)``."""
    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.alpha = nn.Parameter(torch.rand(1, 4, 1, 1) + 0.5)
            self.beta = nn.Parameter(torch.randn(1, 4, 1, 1))

        def forward(self, x):
            h = torch.addcmul(self.beta, self.alpha, self.conv(x), value=0.5)
            return torch.addcdiv(h, h.flip(-1).abs() + 1, h.abs() + 1, value=2.0)

    torch.manual_seed(7)
    m = Affine().eval()
    _check_module(m, (3, 7, 6), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_recurrent_layers_along_an_image_axis():
    """nn.LSTM / nn.GRU over the rows of a feature map (Sequencer2D; nn.RNN shares the
    code path): a bidirectional
    output sees its whole row, a unidirectional one the columns up to its own."""
    class RowRNN(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.rnn = rnn

        def forward(self, x):
            h = self.conv(x)
            n, c, hh, ww = h.shape
            y = self.rnn(h.permute(0, 2, 3, 1).reshape(n * hh, ww, c))[0]
            return y.reshape(n, hh, ww, -1).permute(0, 3, 1, 2)

    torch.manual_seed(8)
    x = torch.randn(2, 3, 4, 5)
    for i, rnn in enumerate((nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True),
                             nn.GRU(4, 5, batch_first=True),
                             nn.LSTM(4, 5, batch_first=True, proj_size=3, bias=False))):
        m = RowRNN(rnn).eval()
        _same_output(m, x, rtol=1e-5, atol=1e-6)
        if i < 2:  # the field: one bidirectional, one unidirectional
            t = _check_masks(m, (1, 3, 4, 5))
            assert t.mask((2, 2)).sum() == (15 if rnn.bidirectional else 12)


def test_nearest_resampling_reads_the_source_indices_pytorch_picks():
    """A scale factor that is not the ratio of the sizes: PyTorch maps output ``o`` to
    ``floor(o / scale)`` (in float32), not ``floor(o * in / out)``; and ``nearest-exact``."""
    class Nearest(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            h = F.interpolate(self.a(x), scale_factor=(1.7, 2.3), mode="nearest")
            return F.interpolate(h, size=(11, 9), mode="nearest-exact")

    torch.manual_seed(9)
    m = Nearest().eval()
    _check_module(m, (3, 5, 6), rtol=1e-5, atol=1e-6)


def test_patch_operators_and_more():
    """Tensor.unfold (HaloNet), F.unfold / F.fold (VOLO's outlook attention), F.rms_norm,
    channel shuffle, tile, diagonal, tensor_split and a constant-index scatter."""
    class Patches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            h = self.a(x)                                                  # 1, 4, 10, 9
            u = h.unfold(3, 3, 2).mean(-1)                                 # 1, 4, 10, 4
            c = F.fold(F.unfold(h, 3, padding=1, stride=2), (10, 9), 3, padding=1, stride=2)
            r = F.rms_norm(c.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2)
            r = F.channel_shuffle(r, 2) + torch.tensor_split(r.tile(1, 2, 1, 1), 3, dim=1)[0][
                :, :3].sum(1, keepdim=True)
            d = torch.diagonal(h[:, :, :9], 0, 2, 3).unsqueeze(-1)         # 1, 4, 9, 1
            d = d + torch.eye(9, 1, dtype=d.dtype)  # BAT's non-local block adds an identity
            idx = torch.arange(9).flip(0).expand(1, 4, 10, 9)
            s = torch.zeros_like(r).scatter(3, idx, r)
            return s[:, :, :, :4] + u + d[:, :, :4].transpose(2, 3).mean(2, keepdim=True)

    torch.manual_seed(10)
    m = Patches().eval()
    _check_module(m, (3, 10, 9), rtol=1e-4, atol=1e-5)


def test_replication_padding_and_a_dilated_max_pool():
    """ReplicationPad2d with a zero side (jnp.pad's edge mode reshapes empty pieces: the
    reshape rule failed on a zero-size axis) and a dilated max-pool (the oracle's surrogate
    averages over the same dilated windows)."""
    torch.manual_seed(11)
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReplicationPad2d((3, 0, 2, 1)),
                      nn.Conv2d(4, 4, 3, padding=(1, 2), padding_mode="replicate"),
                      nn.MaxPool2d((3, 2), 2, (1, 0), dilation=(2, 3), ceil_mode=True)).eval()
    _check_masks(m, (1, 3, 10, 9))


def test_in_place_writes_through_narrow_split_unbind_and_movedim():
    """An in-place op on ``narrow``, ``movedim``, ``diagonal`` or a piece of
    ``chunk``/``split``/``unbind`` writes into the base tensor (these writes were lost: a
    silent wrong field). Autograd forbids the pieces' writes, so those are checked on values
    (``torch.no_grad``, as in inference code)."""
    class Views(nn.Module):
        def __init__(self, pieces):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(4, 4, 1)
            self.pieces = pieces

        def forward(self, x):
            h, g = self.a(x), self.b(self.a(x).roll(2, 3))
            h.narrow(-1, 1, 3).mul_(g.narrow(-1, 0, 3))
            h.movedim(1, 3)[..., 0].add_(g[:, 1])
            torch.diagonal(h, 1, 2, 3).mul_(g[:, :, 0, :3])
            if self.pieces:
                h.chunk(2, 1)[1].add_(g[:, :2].flip(2))
                h.unbind(2)[4].mul_(g[:, :, 0])
                h.split([1, 3], 3)[1].sub_(g[..., :3])
            return h

    torch.manual_seed(12)
    _check_masks(Views(False).eval(), (1, 3, 6, 4))
    x = torch.randn(2, 3, 6, 4)
    for pieces in (False, True):
        m = Views(pieces).eval()
        _same_output(m, x, rtol=1e-5, atol=1e-5)


def test_oracle_softmax_does_not_saturate_after_a_deep_stack():
    """Positive surrogate weights make 8 un-normalised 1x1 convs give logits ~1e7 apart,
    where a plain softmax is one-hot and the oracle lost the attention's field (BotNet,
    HaloNet): the oracle tempers softmaxes (F.softmax and SDPA's, causal mask kept)."""
    class DeepAttention(nn.Module):
        def __init__(self, causal):
            super().__init__()
            self.convs = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 16, 16, 1) for i in range(8)])
            self.causal = causal

        def forward(self, x):
            h = self.convs(x)
            n, c, hh, ww = h.shape
            t = h.flatten(2).transpose(1, 2)                              # N, HW, C
            if self.causal:
                o = F.scaled_dot_product_attention(t[:, None], t[:, None], t[:, None],
                                                   is_causal=True)[:, 0]
            else:
                o = (t @ t.transpose(1, 2)).softmax(-1) @ t
            return o.transpose(1, 2).reshape(n, c, hh, ww)

    torch.manual_seed(13)
    for causal in (False, True):
        t = _check_masks(DeepAttention(causal).eval(), (1, 3, 5, 4))
        assert t.mask((4, 3)).all() and t.mask((0, 0)).sum() == (1 if causal else 20)


def test_layer_whose_output_is_not_its_last_computation_is_refused():
    """``layer=`` stops at the last value computed inside the submodule: a submodule that
    returns a tuple (an LSTM, a pair) or whose last computation is not what it returns is
    refused with a clear error instead of analysing another tensor."""
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.c(x)
            return y, y.mean((2, 3))

    class SideBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)
            self.d = nn.Conv2d(3, 4, 5)

        def forward(self, x):
            y = self.c(x)
            self.d(x)  # computed after y, not returned
            return y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.side = SideBranch()

        def forward(self, x):
            return self.pair(x)[0] + self.side(x)

    with pytest.raises(ValueError, match="layer 'pair' returns a tuple, not one tensor"):
        rfjax.trf(Net(), (1, 3, 8, 8), layer="pair")
    with pytest.raises(ValueError, match=r"layer 'side' returns a tensor of shape \(1, 4, 6, 6\)"
                                         r", but the last value computed inside it has shape"):
        rfjax.trf(Net(), (1, 3, 8, 8), layer="side")
    t = rfjax.trf(Net(), (1, 3, 8, 8), layer="side.c")
    assert (t.output_shape, t.size) == ((6, 6), (3, 3))
