"""U-Net segmentation network in the sizes a scaling-law sweep trains.

:class:`UNet` maps a ``(B, in_channels, H, W)`` float image batch to
``(B, out_channels, H, W)`` class logits for images of any size that
:func:`check_size` accepts. Two numbers set its size: ``width``, the channels at
the top level, and ``depth``, the number of 2x down-sampling steps; level ``l``
has ``width * 2**l`` channels. :func:`count_parameters` and :func:`forward_flops`
give the two size measures that scaling laws are fitted against.

Design
------
- Each level holds two (3x3 conv, GroupNorm, LeakyReLU(0.01)) stages; the 3x3
  convs have no bias, since the norm that follows removes it.
- Down: 2x2 max-pool with stride 2. Up: 2x2 transposed conv with stride 2 that
  halves the channels, concatenation with the encoder output of the same level
  (skip first, then up-sampled), then the two conv stages. Head: 1x1 conv with
  bias, no activation (logits).
- GroupNorm with ``gcd(channels, 8)`` groups: 8 groups from 8 channels on, one
  channel per group (instance norm) below, so width 2 and 4 work; an odd width
  gives one group (layer norm over the channels). BatchNorm is not used: its batch
  statistics are noisy at the batch sizes of 1 to 4 that large images force, and
  its running statistics make eval() differ from train(). GroupNorm statistics are
  per image, so the output does not depend on the batch size or the mode.
- An input whose sides are not multiples of ``2**depth`` is padded with zeros at
  the bottom and right; the features are cropped back to ``(H, W)`` before the
  head, so the logits are exactly ``(H, W)`` and pixel ``(i, j)`` of the output
  belongs to pixel ``(i, j)`` of the input.
- Weights take PyTorch's default initialisation, so two models built after the
  same ``torch.manual_seed`` are identical.
"""

from __future__ import annotations

import math
import operator
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_DEEPEST_SIDE = 4  # pixels of image per side at the deepest level
MAX_GROUPS = 8  # GroupNorm groups: gcd(channels, MAX_GROUPS)
LEAKY_SLOPE = 0.01


def _as_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int, or ValueError naming ``name`` when it is not >= minimum."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return number


def _as_size(size: object) -> tuple[int, int]:
    """``size`` as ``(H, W)`` ints, or ValueError naming ``size``."""
    try:
        height, width = size  # type: ignore[misc]
        return _as_int("size", height, 1), _as_int("size", width, 1)
    except (TypeError, ValueError):
        raise ValueError(
            f"size must be (H, W), two integers >= 1 in pixels; got {size!r}"
        ) from None


def check_size(size: tuple[int, int], depth: int) -> None:
    """Refuse an image too small for a U-Net of ``depth`` down-sampling steps.

    Parameters
    ----------
    size : tuple of int, (H, W)
        Image height and width in pixels.
    depth : int
        Number of 2x down-sampling steps, >= 1.

    Raises
    ------
    ValueError
        When ``depth`` or ``size`` is not valid, or when either side is below
        ``4 * 2**depth`` pixels. The message names the size, the depth, the
        minimum size and the deepest depth that the size allows.

    Notes
    -----
    The rule is ``min(H, W) >= 4 * 2**depth``: the deepest level then holds at
    least 4 x 4 pixels of image rather than padding. Below that the 3x3 convs at
    the bottom see mostly zero padding, and at 1 x 1 a GroupNorm group of one
    channel normalises a single value to zero, so the bottleneck carries nothing.
    Depth 2 needs 16 x 16, depth 4 needs 64 x 64, depth 6 needs 256 x 256.

    Examples
    --------
    >>> check_size((256, 256), depth=6)
    >>> check_size((128, 96), depth=6)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: size 128 x 96 is too small for depth 6: ...
    """
    depth = _as_int("depth", depth, 1)
    height, width = _as_size(size)

    need = MIN_DEEPEST_SIDE * 2**depth
    if min(height, width) >= need:
        return
    deepest = (min(height, width) // MIN_DEEPEST_SIDE).bit_length() - 1
    hint = (
        f"use depth <= {deepest} for this size or a larger image"
        if deepest >= 1
        else f"no depth fits this size; depth 1 needs at least "
        f"{2 * MIN_DEEPEST_SIDE} x {2 * MIN_DEEPEST_SIDE}"
    )
    raise ValueError(
        f"size {height} x {width} is too small for depth {depth}: depth {depth} "
        f"needs images of at least {need} x {need} pixels "
        f"({MIN_DEEPEST_SIDE} * 2**{depth}, so the deepest level is at least "
        f"{MIN_DEEPEST_SIDE} x {MIN_DEEPEST_SIDE}); {hint}"
    )


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(channels, 8)`` groups (see the module docstring)."""
    return nn.GroupNorm(math.gcd(channels, MAX_GROUPS), channels)


class _DoubleConv(nn.Sequential):
    """Two (3x3 conv, GroupNorm, LeakyReLU) stages of one U-Net level.

    Input ``(B, in_channels, H, W)``, output ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _group_norm(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _group_norm(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class UNet(nn.Module):
    """2-D U-Net with GroupNorm, max-pool down, transposed-conv up, concat skips.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input image (1 for B-mode echo).
    out_channels : int, default 4
        Classes; the output holds one logit map per class.
    width : int, default 16
        Channels at the top level; level ``l`` has ``width * 2**l``. Tested from
        2 to 64.
    depth : int, default 4
        Number of 2x down-sampling steps (levels below the top). Tested from 2 to
        6; images must be at least ``4 * 2**depth`` pixels per side
        (:func:`check_size`).

    Attributes
    ----------
    in_channels, out_channels, width, depth : int
        The constructor arguments; :meth:`config` returns them as a dict.
    encoder : nn.ModuleList of ``depth + 1`` conv blocks, top level first.
    pool : nn.MaxPool2d, 2x2 with stride 2, shared by every level.
    up : nn.ModuleList of ``depth`` transposed convs; ``up[l]`` goes from level
        ``l + 1`` to level ``l``.
    decoder : nn.ModuleList of ``depth`` conv blocks; ``decoder[l]`` is level ``l``.
    head : nn.Conv2d, 1x1, ``width -> out_channels``.

    Notes
    -----
    Shapes: input ``x`` float, ``(B, in_channels, H, W)``; output logits
    ``(B, out_channels, H, W)`` for any ``H, W`` that :func:`check_size` accepts.
    Level ``l`` works at ``ceil(H / 2**depth) * 2**(depth - l)`` rows (likewise
    columns) after the zero padding at the bottom and right.

    The model runs in channels-last memory format and under
    ``torch.autocast(..., dtype=torch.bfloat16)``; there the logits come back in
    bfloat16 and the caller casts them. Parameters: see :func:`count_parameters`;
    the count grows about as ``width**2 * 4**depth``, and most of it sits in the
    deepest two levels.

    Examples
    --------
    >>> model = UNet(in_channels=1, out_channels=4, width=8, depth=3)
    >>> model(torch.zeros(2, 1, 101, 75)).shape
    torch.Size([2, 4, 101, 75])
    >>> UNet(**model.config()).config() == model.config()
    True
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        width: int = 16,
        depth: int = 4,
    ) -> None:
        super().__init__()
        self.in_channels = _as_int("in_channels", in_channels, 1)
        self.out_channels = _as_int("out_channels", out_channels, 1)
        self.width = _as_int("width", width, 1)
        self.depth = _as_int("depth", depth, 1)

        channels = [self.width * 2**level for level in range(self.depth + 1)]
        self.encoder = nn.ModuleList(
            [_DoubleConv(self.in_channels, channels[0])]
            + [
                _DoubleConv(channels[i - 1], channels[i])
                for i in range(1, len(channels))
            ]
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
            for i in range(self.depth)
        )
        self.decoder = nn.ModuleList(
            _DoubleConv(2 * channels[i], channels[i]) for i in range(self.depth)
        )
        self.head = nn.Conv2d(channels[0], self.out_channels, 1)

    def config(self) -> dict[str, int]:
        """The constructor arguments: ``UNet(**model.config())`` rebuilds the model.

        Returns
        -------
        dict
            ``{"in_channels", "out_channels", "width", "depth"}``, all ints.
        """
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "width": self.width,
            "depth": self.depth,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for an image batch.

        Parameters
        ----------
        x : Tensor, shape (B, in_channels, H, W), float
            Image batch; any ``H, W`` of at least ``4 * 2**depth`` pixels.

        Returns
        -------
        Tensor, shape (B, out_channels, H, W)
            Unnormalised class scores (apply softmax or cross-entropy), in the
            input's dtype or the autocast dtype.

        Raises
        ------
        ValueError
            When ``x`` is not 4-D with ``in_channels`` channels, or too small for
            the depth (:func:`check_size`).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, H, W); got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        check_size((height, width), self.depth)

        multiple = 2**self.depth
        pad_rows, pad_cols = -height % multiple, -width % multiple
        if pad_rows or pad_cols:
            x = F.pad(x, (0, pad_cols, 0, pad_rows))

        skips = []
        for block in self.encoder[:-1]:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.encoder[-1](x)
        for level in reversed(range(self.depth)):
            x = self.decoder[level](torch.cat([skips[level], self.up[level](x)], 1))

        # Crop before the 1x1 head: same logits, and the output is a dense tensor
        # (in the input's memory format) rather than a view into a padded one.
        return self.head(x[..., :height, :width])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``), shared ones once.

    Parameters
    ----------
    model : nn.Module
        Any module; works on the meta device too.

    Returns
    -------
    int
        Sum of ``numel`` over the parameters that require a gradient.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORM_TYPES = (nn.GroupNorm, nn.BatchNorm2d, nn.InstanceNorm2d, nn.LayerNorm)
_ELEMENTWISE_TYPES = (nn.ReLU, nn.LeakyReLU)
_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d)
_FREE_TYPES = (nn.Identity, nn.Dropout)
_COUNTED_TYPES = (
    _CONV_TYPES + _NORM_TYPES + _ELEMENTWISE_TYPES + _POOL_TYPES + _FREE_TYPES
)


def _layer_flops(module: nn.Module, inputs: tuple, output: Tensor) -> int:
    """FLOPs of one call of a leaf module, by the rules of :func:`forward_flops`."""
    n_out = output.numel()
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        macs = inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        return 2 * macs + (n_out if module.bias is not None else 0)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        macs = n_out * (module.in_channels // module.groups) * kh * kw
        return 2 * macs + (n_out if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        macs = n_out * module.in_features
        return 2 * macs + (n_out if module.bias is not None else 0)
    if isinstance(module, _NORM_TYPES):
        affine = getattr(module, "affine", getattr(module, "elementwise_affine", False))
        return (6 if affine else 4) * n_out
    if isinstance(module, _ELEMENTWISE_TYPES):
        return n_out
    if isinstance(module, _POOL_TYPES):
        return inputs[0].numel()
    return 0  # _FREE_TYPES


def forward_flops(model: nn.Module, size: tuple[int, int]) -> int:
    """Forward-pass FLOPs for one image of ``size``, counted from the layers run.

    The model runs once on a meta-device image ``(1, model.in_channels, H, W)``
    with its parameters swapped for meta tensors (no arithmetic, no memory, the
    model itself untouched), and forward hooks on its leaf modules add up each
    call. Whatever the forward does is counted: for a :class:`UNet` that is the
    padding to a multiple of ``2**depth`` and the shared max-pool at every level.

    Parameters
    ----------
    model : UNet or nn.Module
        A :class:`UNet`, or any module with an integer ``in_channels`` attribute
        (an ``nn.Conv2d``, say) built from the layers below. A
        ``torch.compile``-d module is unwrapped to the module it compiles.
    size : tuple of int, (H, W)
        Image height and width in pixels.

    Returns
    -------
    int
        FLOPs for batch size 1 (multiply and add counted as two).

    Raises
    ------
    ValueError
        When ``size`` is invalid or too small for a UNet's depth
        (:func:`check_size`), or the model has no integer ``in_channels``.
    NotImplementedError
        When the model holds a leaf module that the rules do not cover.

    Notes
    -----
    Rules, per call, with ``N_in`` and ``N_out`` the input and output elements:

    - ``Conv2d``: ``2 * N_out * (in_channels / groups) * kh * kw``, plus
      ``N_out`` bias adds.
    - ``ConvTranspose2d``: ``2 * N_in * (out_channels / groups) * kh * kw``
      (each input element meets each kernel tap once), plus ``N_out`` bias adds.
      Applying the ``Conv2d`` formula to the output instead would over-count a
      stride-2 2x2 transposed conv by 4 (stride squared).
    - ``Linear``: ``2 * N_out * in_features``, plus ``N_out`` bias adds.
    - GroupNorm / BatchNorm2d / InstanceNorm2d / LayerNorm: ``4 * N_out``
      (sum, sum of squares, subtract mean, scale by the inverse deviation), plus
      ``2 * N_out`` with an affine scale and shift.
    - ReLU / LeakyReLU: ``N_out``. Max / average pool: ``N_in`` (each input
      compared or added once).
    - Identity, Dropout (at inference), padding, concatenation and cropping: 0.

    A training step costs about 3 times the forward FLOPs (backward ~ 2x).
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper
    if isinstance(model, UNet):
        check_size(size, model.depth)
    height, width = _as_size(size)
    in_channels = getattr(model, "in_channels", None)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int):
        raise ValueError(
            f"model must have an integer in_channels attribute; "
            f"{type(model).__name__} has {in_channels!r}"
        )
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    for leaf in leaves:
        if not isinstance(leaf, _COUNTED_TYPES):
            raise NotImplementedError(
                f"forward_flops cannot count {type(leaf).__name__} layers; it "
                f"counts {', '.join(t.__name__ for t in _COUNTED_TYPES)}"
            )

    total = 0

    def add(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        nonlocal total
        total += _layer_flops(module, inputs, output)

    handles = [leaf.register_forward_hook(add) for leaf in leaves]
    try:
        state = {
            name: torch.empty_like(tensor, device="meta")
            for name, tensor in chain(model.named_parameters(), model.named_buffers())
        }
        image = torch.empty(1, in_channels, height, width, device="meta")
        with torch.no_grad():
            torch.func.functional_call(model, state, (image,))
    finally:
        for handle in handles:
            handle.remove()
    return total
