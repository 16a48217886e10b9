"""U-Net: odd-size shapes, gradients, batch-of-one training, sizes, FLOPs, formats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from echoscale.unet import UNet, check_size, count_parameters, forward_flops

DEPTHS = (2, 3, 4, 5, 6)


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Run this module on one thread, then restore the setting.

    These tensors are small: on the two shared cores a second OpenMP thread mostly
    waits, and the module took about twice as long with it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smallest_odd_size(depth: int) -> tuple[int, int]:
    """An odd (H, W) just above the documented minimum of 4 * 2**depth per side."""
    side = 4 * 2**depth
    return side + 1, side + 3


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """Elementwise |actual - expected| <= tol * (1 + |expected|).

    torch.testing.assert_close would cost ~2 s of imports on its first call.
    """
    excess = (actual - expected).abs() - tol * (1 + expected.abs())
    assert excess.max() <= 0, f"max abs diff {(actual - expected).abs().max():.3g}"


# Layer formulas, written out independently of echoscale.unet.
def conv_parameters(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def block_parameters(c_in: int, c_out: int) -> int:
    """Two bias-free 3x3 convs, each followed by a GroupNorm (scale + shift)."""
    return (
        conv_parameters(c_in, c_out, 3, bias=False)
        + 2 * c_out
        + conv_parameters(c_out, c_out, 3, bias=False)
        + 2 * c_out
    )


def expected_parameters(c_in: int, c_out: int, width: int, depth: int) -> int:
    c = [width * 2**level for level in range(depth + 1)]
    encoder = block_parameters(c_in, c[0]) + sum(
        block_parameters(c[i - 1], c[i]) for i in range(1, depth + 1)
    )
    decoder = sum(
        conv_parameters(c[i + 1], c[i], 2, bias=True) + block_parameters(2 * c[i], c[i])
        for i in range(depth)
    )
    return encoder + decoder + conv_parameters(c[0], c_out, 1, bias=True)


# --- shapes at odd sizes ----------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_output_is_batch_by_classes_by_input_size_at_101x75_or_refused(depth):
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=4, width=4, depth=depth)
    x = torch.randn(2, 1, 101, 75)

    if 75 >= 4 * 2**depth:
        assert model(x).shape == (2, 4, 101, 75)
    else:  # depths 5 and 6 need 128 and 256 pixels a side
        with pytest.raises(ValueError, match=r"101 x 75 .* depth "):
            check_size((101, 75), depth)
        with pytest.raises(ValueError, match=r"101 x 75 .* depth "):
            model(x)
        h, w = smallest_odd_size(depth)
        model = UNet(in_channels=1, out_channels=4, width=2, depth=depth)
        assert model(torch.randn(1, 1, h, w)).shape == (1, 4, h, w)


@pytest.mark.parametrize("depth", DEPTHS)
def test_output_is_batch_by_classes_by_input_size_at_778x594(depth):
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=4, width=2, depth=depth)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 778, 594))
    assert out.shape == (1, 4, 778, 594)
    assert torch.isfinite(out).all()


def test_output_pixel_depends_on_its_own_input_pixel_after_the_crop():
    # Padding is at the bottom/right: the top-left pixels are not shifted.
    torch.manual_seed(0)
    model = UNet(1, 2, width=2, depth=2).eval()
    x = torch.zeros(1, 1, 21, 19, requires_grad=True)
    model(x)[0, 0, 0, 0].backward()
    assert x.grad[0, 0, 0, 0] != 0


# --- gradients and training -------------------------------------------------------


@pytest.mark.parametrize(("width", "depth"), [(2, 2), (4, 3)])
def test_every_parameter_gets_a_finite_nonzero_gradient(width, depth):
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=3, width=width, depth=depth)
    x = torch.randn(2, 1, 37, 45)
    target = torch.randint(0, 3, (2, 37, 45))

    F.cross_entropy(model(x), target).backward()

    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_a_batch_of_one_trains_in_train_mode():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=2, width=4, depth=2).train()
    rows, cols = torch.meshgrid(torch.arange(24), torch.arange(20), indexing="ij")
    target = (((rows - 12) ** 2 + (cols - 10) ** 2) < 36).long()[None]
    image = target[:, None].float() + 0.3 * torch.randn(1, 1, 24, 20)

    # Plain gradient descent: torch.optim would import torch._dynamo (~5 s here).
    losses = []
    for _ in range(8):
        model.zero_grad()
        loss = F.cross_entropy(model(image), target)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.2 * p.grad
        losses.append(loss.item())

    assert losses[-1] < 0.7 * losses[0], losses


def test_eval_output_equals_train_output_with_groupnorm():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=4, width=4, depth=3)
    x = torch.randn(3, 1, 40, 36)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
        single = model(x[:1])
    assert torch.equal(train_out, eval_out)
    # Per-image statistics: an image's logits do not depend on its batch mates.
    assert_close(single, eval_out[:1], tol=1e-5)


# --- sizes and parameter counts ---------------------------------------------------


@pytest.mark.parametrize("depth", [2, 6])
@pytest.mark.parametrize("width", [2, 8, 64])
def test_widths_2_to_64_and_depths_2_to_6_construct_and_count(width, depth):
    # On the meta device: width 64 at depth 6 holds ~5 * 10**8 parameters.
    with torch.device("meta"):
        model = UNet(in_channels=1, out_channels=4, width=width, depth=depth)
        side = 4 * 2**depth
        out = model(torch.empty(1, 1, side, side))
    assert count_parameters(model) == expected_parameters(1, 4, width, depth)
    assert out.shape == (1, 4, side, side)
    assert model.config() == {
        "in_channels": 1,
        "out_channels": 4,
        "width": width,
        "depth": depth,
    }


@pytest.mark.parametrize(("width", "depth"), [(2, 6), (8, 6), (64, 2)])
def test_small_and_wide_models_run_forward_on_cpu(width, depth):
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=4, width=width, depth=depth)
    side = 4 * 2**depth
    with torch.no_grad():
        out = model(torch.randn(1, 1, side, side))
    assert out.shape == (1, 4, side, side) and torch.isfinite(out).all()


def test_count_parameters_matches_a_hand_count_for_a_tiny_unet():
    # width 2, depth 2, 1 -> 2 classes; channels 2, 4, 8 by level.
    # encoder: (18+4+36+4) + (72+8+144+8) + (288+16+576+16) = 62 + 232 + 896
    # decoder: up 8->4 (128+4) + block 8->4 (288+8+144+8) = 580,
    #          up 4->2 (32+2) + block 4->2 (72+4+36+4) = 150; head 2*2+2 = 6
    hand = 62 + 232 + 896 + 580 + 150 + 6
    assert hand == expected_parameters(1, 2, 2, 2) == 1926
    assert (
        count_parameters(UNet(in_channels=1, out_channels=2, width=2, depth=2)) == hand
    )


def test_count_parameters_skips_frozen_parameters():
    model = UNet(in_channels=1, out_channels=2, width=2, depth=2)
    model.head.requires_grad_(False)
    assert count_parameters(model) == 1926 - 6


def test_config_rebuilds_an_equivalent_model():
    model = UNet(in_channels=3, out_channels=5, width=6, depth=3)
    rebuilt = UNet(**model.config())
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config() == model.config()
    assert all(isinstance(v, int) for v in model.config().values())


# --- forward FLOPs ----------------------------------------------------------------


def test_forward_flops_of_a_single_conv_matches_the_hand_count():
    # 5 x 7 x 9 outputs, each 3 * 3 * 3 multiply-adds, plus one bias add.
    conv = nn.Conv2d(3, 5, 3, padding=1)
    assert forward_flops(conv, (7, 9)) == 2 * 315 * 27 + 315 == 17325
    # stride 2 and 2 groups: 6 x 4 x 4 outputs, each 2 * 3 * 3 multiply-adds.
    grouped = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    assert forward_flops(grouped, (8, 8)) == 2 * 96 * 18 == 3456


def test_forward_flops_of_a_transposed_conv_counts_each_input_tap_once():
    # 4 x 3 x 3 inputs, each times 2 output channels x 2 x 2 taps; 2 x 6 x 6 biases.
    up = nn.ConvTranspose2d(4, 2, 2, stride=2)
    assert forward_flops(up, (3, 3)) == 2 * 36 * 2 * 4 + 72 == 648


def test_forward_flops_of_a_tiny_unet_matches_the_documented_rules():
    # width 2, depth 1, 1 -> 2 classes, 8 x 8: 128 elements at the top (2 ch),
    # 64 at the bottom (4 ch x 4 x 4). GroupNorm 6 / element, LeakyReLU 1.
    top, bottom = 128, 64
    encoder_top = 2 * top * 1 * 9 + 2 * top * 2 * 9 + 2 * (6 + 1) * top
    pool = top
    encoder_bottom = 2 * bottom * 2 * 9 + 2 * bottom * 4 * 9 + 2 * (6 + 1) * bottom
    up = 2 * bottom * 2 * 4 + top
    decoder_top = 2 * top * 4 * 9 + 2 * top * 2 * 9 + 2 * (6 + 1) * top
    head = 2 * top * 2 + top
    hand = encoder_top + pool + encoder_bottom + up + decoder_top + head
    assert forward_flops(UNet(1, 2, width=2, depth=1), (8, 8)) == hand == 34048


def test_forward_flops_grow_with_width():
    flops = [forward_flops(UNet(1, 4, width=w, depth=3), (64, 64)) for w in (2, 4, 8)]
    assert flops == sorted(flops) and len(set(flops)) == 3


def test_forward_flops_quadruple_when_the_image_side_doubles():
    with torch.device("meta"):
        model = UNet(1, 4, width=16, depth=4)
    ratio = forward_flops(model, (256, 192)) / forward_flops(model, (128, 96))
    assert ratio == pytest.approx(4, rel=0.02)


def test_forward_flops_count_the_padding_to_a_multiple_of_2_to_the_depth():
    # 241 pads to 256 at depth 4; only the 1x1 head runs on the cropped size.
    model = UNet(1, 4, width=4, depth=4)
    head_per_pixel = 2 * 4 * 4 + 4
    padded = forward_flops(model, (256, 256))
    assert forward_flops(model, (241, 241)) == padded - head_per_pixel * (
        256**2 - 241**2
    )


def test_forward_flops_leave_the_model_untouched():
    torch.manual_seed(0)
    model = UNet(1, 4, width=2, depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forward_flops(model, (32, 32))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not model._forward_hooks and not model.head._forward_hooks


def test_forward_flops_refuse_a_layer_they_cannot_count():
    class Gated(nn.Module):
        in_channels = 1

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.gate = nn.Sigmoid()

        def forward(self, x):
            return self.gate(self.conv(x))

    with pytest.raises(NotImplementedError, match="Sigmoid"):
        forward_flops(Gated(), (8, 8))
    with pytest.raises(ValueError, match="in_channels"):
        forward_flops(nn.Sequential(nn.Conv2d(1, 1, 1)), (8, 8))
    with pytest.raises(ValueError, match="100 x 100 .* depth 5"):
        forward_flops(UNet(width=2, depth=5), (100, 100))


# --- memory formats, mixed precision, determinism ---------------------------------


def test_channels_last_gives_the_nchw_output():
    torch.manual_seed(0)
    model = UNet(in_channels=2, out_channels=4, width=4, depth=3).eval()
    x = torch.randn(2, 2, 37, 45)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert_close(out, reference, tol=1e-5)


def test_bf16_autocast_on_cpu_runs_and_agrees_with_fp32():
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=4, width=8, depth=3).eval()
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == reference.shape
    assert out.dtype == torch.bfloat16
    out = out.float()
    assert torch.isfinite(out).all()
    correlation = torch.corrcoef(torch.stack([out.flatten(), reference.flatten()]))
    assert correlation[0, 1] > 0.99
    assert (out - reference).abs().max() < 0.1 * reference.abs().max()


def test_models_built_after_the_same_seed_give_identical_outputs():
    x = torch.randn(1, 1, 33, 35)
    outputs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        with torch.no_grad():
            outputs.append(UNet(1, 4, width=4, depth=2)(x))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


# --- input checks -----------------------------------------------------------------


def test_check_size_refuses_a_too_small_image_naming_size_and_depth():
    with pytest.raises(ValueError, match=r"size 101 x 75 .* depth 6.* 256 x 256"):
        check_size((101, 75), depth=6)
    with pytest.raises(ValueError, match=r"size 255 x 300 .* depth 6"):
        check_size((255, 300), depth=6)
    with pytest.raises(ValueError, match="no depth fits"):
        check_size((7, 100), depth=1)
    check_size((256, 256), depth=6)
    check_size((16, 16), depth=2)


@pytest.mark.parametrize(
    ("size", "depth", "match"),
    [
        ((64, 64), 0, "depth must be an integer >= 1; got 0"),
        ((64, 64), 2.0, "depth must be an integer >= 1; got 2.0"),
        ((0, 64), 2, r"size must be \(H, W\).*got \(0, 64\)"),
        ((64,), 2, r"size must be \(H, W\).*got \(64,\)"),
    ],
)
def test_check_size_refuses_invalid_arguments(size, depth, match):
    with pytest.raises(ValueError, match=match):
        check_size(size, depth)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width must be an integer >= 1; got 0"),
        ({"depth": 0}, "depth must be an integer >= 1; got 0"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1; got 0"),
        ({"out_channels": True}, "out_channels must be an integer >= 1; got True"),
        ({"width": 2.5}, "width must be an integer >= 1; got 2.5"),
    ],
)
def test_unet_refuses_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_forward_refuses_a_wrong_channel_count():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\); got"):
        UNet(in_channels=1, width=2, depth=2)(torch.zeros(1, 3, 32, 32))
