"""Synthesis networks: HR-FCN (paper and reference-code variants) and U-Net baselines.

Every model maps (B, n_inputs, D, H, W) -> (B, 1, D, H, W). Design decisions are
recorded in docs/models.md; comments here only say why something is done.

Output (``output``): ``"direct"`` (the paper) puts a sigmoid on the last convolution, so the network
draws the whole CE-T1; ``"residual"`` adds ``tanh`` of the last convolution to the first input (the
T1), with that convolution zero-initialised, so training starts at the no-model baseline and the
network learns the enhancement (how the reference code's 3D U-Net multiplies its output by the T1).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# Keras BatchNormalization defaults (momentum 0.99 there == 0.01 here).
KERAS_BN = dict(momentum=0.01, eps=1e-3)


def _ch(c: int, width: float) -> int:
    """Scaled channel count; at least 1 so tiny demo widths still build."""
    return max(1, int(round(c * width)))


def _he_init(module: nn.Module) -> None:
    """he_normal on every conv (as the reference U-Nets and nb-convs), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _Ops:
    """Factories that hide whether a network is 2D or 3D.

    In 3D the slice axis D is never strided, pooled or upsampled (3-slice patches).
    """

    def __init__(self, nd: int, bn_kwargs: dict | None = None):
        self.nd = nd
        self.bn_kwargs = bn_kwargs or {}

    def _k(self, k):
        return (k,) * self.nd if isinstance(k, int) else k

    def conv(self, cin, cout, k=3, down=False, bias=False):
        k = self._k(k)
        stride = (1, 2, 2) if (down and self.nd == 3) else (2 if down else 1)
        conv_cls = nn.Conv3d if self.nd == 3 else nn.Conv2d
        return conv_cls(cin, cout, k, stride=stride, padding=tuple(x // 2 for x in k), bias=bias)

    def bn(self, c):
        return (nn.BatchNorm3d if self.nd == 3 else nn.BatchNorm2d)(c, **self.bn_kwargs)

    def up(self, s):
        return nn.Upsample(scale_factor=(1, s, s) if self.nd == 3 else s, mode="nearest")

    def pool(self):
        return nn.MaxPool3d((1, 2, 2)) if self.nd == 3 else nn.MaxPool2d(2)


class KerasSameDown(nn.Module):
    """Stride-(1,2,2) conv with Keras/TF 'same' padding.

    TF pads (0 before, 1 after) for a 3-tap stride-2 conv on even sizes, whereas
    PyTorch padding=1 is symmetric and shifts the sampling grid by one pixel.
    """

    def __init__(self, cin, cout, k=(1, 3, 3), bias=False):
        super().__init__()
        self.k = k
        self.conv = nn.Conv3d(cin, cout, k, stride=(1, 2, 2), padding=(k[0] // 2, 0, 0), bias=bias)

    def forward(self, x):
        pads = []
        for size, k in ((x.shape[-1], self.k[2]), (x.shape[-2], self.k[1])):
            total = max((-(-size // 2) - 1) * 2 + k - size, 0)
            pads += [total // 2, total - total // 2]
        return self.conv(F.pad(x, pads))


class ResBlock(nn.Module):
    """The paper's ResBlock: Conv-BN-ReLU, Conv-BN, + shortcut, ReLU."""

    def __init__(self, ops: _Ops, cin: int, cout: int, bias: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            ops.conv(cin, cout, bias=bias), ops.bn(cout), nn.ReLU(inplace=True),
            ops.conv(cout, cout, bias=bias), ops.bn(cout),
        )
        self.shortcut = (nn.Identity() if cin == cout
                         else nn.Sequential(ops.conv(cin, cout, k=1), ops.bn(cout)))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """Reference-code stem block: 1x1 reduce, 3x3x3, 1x1 expand (+ shortcut), ReLU."""

    def __init__(self, ops: _Ops, cin: int, cout: int, inner: int, project: bool):
        super().__init__()
        self.body = nn.Sequential(
            ops.conv(cin, inner, k=1), ops.bn(inner), nn.ReLU(inplace=True),
            ops.conv(inner, inner, bias=True), ops.bn(inner), nn.ReLU(inplace=True),
            ops.conv(inner, cout, k=1), ops.bn(cout),
        )
        self.shortcut = (nn.Sequential(ops.conv(cin, cout, k=1), ops.bn(cout))
                         if project else nn.Identity())

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Fuse(nn.Module):
    """Multi-scale exchange: every target branch sums all source branches.

    Higher-resolution sources are downsampled by chained strided convs (+BN, ReLU
    between steps); lower-resolution ones by 1x1 conv + BN + nearest upsampling.
    """

    def __init__(self, ops: _Ops, widths, targets=None, relu=True,
                 down_conv: Callable | None = None):
        super().__init__()
        targets = range(len(widths)) if targets is None else targets
        down_conv = down_conv or (lambda cin, cout: ops.conv(cin, cout, down=True))
        self.relu = relu
        self.paths = nn.ModuleList()
        for i in targets:
            row = nn.ModuleList()
            for j, cj in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(nn.Sequential(ops.conv(cj, widths[i], k=1), ops.bn(widths[i]),
                                             ops.up(2 ** (j - i))))
                else:
                    steps = []
                    for s in range(i - j):
                        last = s == i - j - 1
                        cout = widths[i] if last else cj
                        steps += [down_conv(cj, cout), ops.bn(cout)]
                        if not last:
                            steps.append(nn.ReLU(inplace=True))
                    row.append(nn.Sequential(*steps))
            self.paths.append(row)

    def forward(self, xs):
        outs = []
        for row in self.paths:
            y = sum(path(x) for path, x in zip(row, xs))
            outs.append(F.relu(y) if self.relu else y)
        return outs


OUTPUTS = ("direct", "residual")


class SynthesisNet(nn.Module):
    """Base: validates the (B, M, D, H, W) input, runs `_forward` (the last convolution's map), then the
    output activation (``output``, module docstring)."""

    architecture: str  # ARCHITECTURES key; summary.receptive_field rebuilds a 1-channel copy from it
    size_divisor: int = 1
    slicewise: bool = False  # True: each output slice depends on its own input slice only
    # Output "direct": the sigmoid keeps the CE-T1 estimate in the model-space range [0, 1]
    # (cesynth/preprocess/intensity.py).
    direct_activation = staticmethod(torch.sigmoid)

    def __init__(self, n_inputs: int, output: str = "direct"):
        super().__init__()
        if n_inputs < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.n_inputs, self.output = n_inputs, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.n_inputs:
            raise ValueError(f"expected input (B, {self.n_inputs}, D, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(f"{type(self).__name__}: H and W must be divisible by "
                             f"size_divisor={self.size_divisor}, got H={h}, W={w}")
        z = self._forward(x)
        return x[:, :1] + torch.tanh(z) if self.output == "residual" else self.direct_activation(z)

    def _forward(self, x):
        raise NotImplementedError

    def _init_weights(self, last_conv: nn.Module):
        """he_normal everywhere; a residual net's last convolution starts at zero (output = the T1)."""
        _he_init(self)
        if self.output == "residual":
            nn.init.zeros_(last_conv.weight)
            nn.init.zeros_(last_conv.bias)


class _PerSlice2D(SynthesisNet):
    """2D nets: fold D into the batch so each slice is processed independently."""

    slicewise = True

    def forward_2d(self, x):
        raise NotImplementedError

    def _forward(self, x):
        b, m, d, h, w = x.shape
        y = self.forward_2d(x.transpose(1, 2).reshape(b * d, m, h, w))
        return y.reshape(b, d, 1, h, w).transpose(1, 2)


class _HRFCNCore(nn.Module):
    """HR-FCN as described in the paper (Sec. III-B, Fig. 2), for 2D or 3D ops."""

    def __init__(self, ops: _Ops, n_inputs: int, width: float, blocks: int = 4):
        super().__init__()
        w = [_ch(c, width) for c in (64, 128, 256)]
        stem_w = w[0]
        self.stems = nn.ModuleList(
            nn.Sequential(ops.conv(1, stem_w), ops.bn(stem_w), nn.ReLU(inplace=True),
                          *[ResBlock(ops, stem_w, stem_w) for _ in range(blocks)])
            for _ in range(n_inputs))
        cat = stem_w * n_inputs
        self.trans1 = nn.ModuleList([
            nn.Sequential(ops.conv(cat, w[0]), ops.bn(w[0]), nn.ReLU(inplace=True)),
            nn.Sequential(ops.conv(cat, w[1], down=True), ops.bn(w[1]), nn.ReLU(inplace=True)),
        ])
        # Stage widths: 2 branches, then the 1/4 branch joins and a further 3-branch stage.
        self.stages = nn.ModuleList()
        self.fuses = nn.ModuleList()
        for n_br in (2, 3, 3):
            self.stages.append(nn.ModuleList(
                nn.Sequential(*[ResBlock(ops, w[i], w[i]) for _ in range(blocks)])
                for i in range(n_br)))
            self.fuses.append(Fuse(ops, w[:n_br]))
        # New lowest branch: stride-2 3x3x3 conv from the fused 1/2 branch.
        self.trans2 = nn.Sequential(ops.conv(w[1], w[2], down=True), ops.bn(w[2]),
                                    nn.ReLU(inplace=True))
        self.ups = nn.ModuleList([nn.Identity(), ops.up(2), ops.up(4)])
        head_w = w[0]
        self.final = ResBlock(ops, sum(w), head_w)
        self.out = ops.conv(head_w, 1, k=1, bias=True)

    def forward(self, x):
        feats = torch.cat([stem(x[:, i:i + 1]) for i, stem in enumerate(self.stems)], 1)
        xs = [t(feats) for t in self.trans1]
        for s, (stage, fuse) in enumerate(zip(self.stages, self.fuses)):
            if s == 1:
                xs = xs + [self.trans2(xs[1])]
            xs = fuse([blk(x_) for blk, x_ in zip(stage, xs)])
        y = self.final(torch.cat([up(x_) for up, x_ in zip(self.ups, xs)], 1))
        return self.out(y)


class HRFCN3D(SynthesisNet):
    architecture = "hrfcn3d"
    size_divisor = 4

    def __init__(self, n_inputs: int, width: float = 1.0, output: str = "direct"):
        super().__init__(n_inputs, output)
        self.net = _HRFCNCore(_Ops(3), n_inputs, width)
        self._init_weights(self.net.out)

    def _forward(self, x):
        return self.net(x)


class HRFCN2D(_PerSlice2D):
    architecture = "hrfcn2d"
    size_divisor = 4

    def __init__(self, n_inputs: int, width: float = 1.0, output: str = "direct"):
        super().__init__(n_inputs, output)
        self.net = _HRFCNCore(_Ops(2), n_inputs, width)
        self._init_weights(self.net.out)

    def forward_2d(self, x):
        # The core indexes modalities on dim 1, which is the channel dim in 2D too.
        return self.net(x)


class HRFCN3DRef(SynthesisNet):
    """Effective graph of the reference Keras model (hrnet_3D1), dead branches dropped."""

    architecture = "hrfcn3d_ref"
    size_divisor = 4
    direct_activation = staticmethod(F.relu)  # the reference head ends in BN(1) + ReLU: >= 0, no upper bound

    def __init__(self, n_inputs: int, width: float = 1.0, output: str = "direct"):
        super().__init__(n_inputs, output)
        if output != "direct":  # BN(1) on the output map rescales any small residual to unit variance
            raise ValueError("hrfcn3d_ref keeps the reference code's BN + ReLU head: output must be 'direct'")
        ops = _Ops(3, KERAS_BN)
        k = (1, 3, 3)
        w = [_ch(c, width) for c in (32, 64, 128)]
        sw, si = _ch(128, width), _ch(32, width)

        def cbr(cin, cout, down=False, bias=False):
            conv = KerasSameDown(cin, cout, k, bias=bias) if down else ops.conv(cin, cout, k=k, bias=bias)
            return nn.Sequential(conv, ops.bn(cout), nn.ReLU(inplace=True))

        def branch(c):
            return nn.Sequential(*[ResBlock(ops, c, c, bias=True) for _ in range(4)])

        def fuse(widths, targets):
            return Fuse(ops, widths, targets=targets, relu=False,
                        down_conv=lambda cin, cout: KerasSameDown(cin, cout, k))

        self.stems = nn.ModuleList(
            nn.Sequential(ops.conv(1, sw, bias=True), ops.bn(sw), nn.ReLU(inplace=True),
                          *[Bottleneck(ops, sw, sw, si, project=(b == 0)) for b in range(4)])
            for _ in range(n_inputs))
        cat = sw * n_inputs
        self.trans1 = nn.ModuleList([cbr(cat, w[0]), cbr(cat, w[1], down=True)])
        self.stage_a = nn.ModuleList([branch(w[0]), branch(w[1])])
        self.fuse1 = fuse(w[:2], targets=[0, 1])
        self.trans2 = nn.ModuleList([cbr(w[0], w[0]), cbr(w[1], w[1]), cbr(w[1], w[2], down=True)])
        self.stage_b = nn.ModuleList([branch(c) for c in w])
        # The reference computes a third fused output whose consumers never reach the output.
        self.fuse2 = fuse(w, targets=[0, 1])
        self.trans3 = nn.ModuleList([cbr(w[0], w[0]), cbr(w[1], w[1])])
        self.stage_c = nn.ModuleList([branch(w[0]), branch(w[1])])
        self.up1 = nn.Sequential(ops.conv(w[1], w[0], k=1), ops.bn(w[0]), ops.up(2))
        self.head = nn.Sequential(ops.conv(2 * w[0], 1, k=1), ops.bn(1))  # then ReLU (direct_activation)
        self._keras_init()

    def _keras_init(self):
        # Keras: glorot_uniform for convs with bias, he_normal for use_bias=False, zero bias.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                if m.bias is not None:
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def _forward(self, x):
        feats = torch.cat([stem(x[:, i:i + 1]) for i, stem in enumerate(self.stems)], 1)
        xs = [t(feats) for t in self.trans1]
        xs = self.fuse1([b(x_) for b, x_ in zip(self.stage_a, xs)])
        xs = [self.trans2[0](xs[0]), self.trans2[1](xs[1]), self.trans2[2](xs[1])]
        xs = self.fuse2([b(x_) for b, x_ in zip(self.stage_b, xs)])
        xs = [b(t(x_)) for b, t, x_ in zip(self.stage_c, self.trans3, xs)]
        return self.head(torch.cat([xs[0], self.up1(xs[1])], 1))


class _UNetCore(nn.Module):
    """U-Net with `convs` conv+ReLU per level; plain (no BN) as in the reference baselines unless ``batch_norm``
    (a BN between every level's conv and its ReLU)."""

    def __init__(self, ops: _Ops, n_inputs: int, width: float, convs: int, dropout: float, batch_norm: bool):
        super().__init__()
        w = [_ch(c, width) for c in (64, 128, 256, 512, 1024)]

        def level(cin, cout, drop):
            layers = []
            for i in range(convs):
                conv = ops.conv(cin if i == 0 else cout, cout, bias=not batch_norm)
                layers += [conv, ops.bn(cout), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]
            if drop:
                layers.append(nn.Dropout(dropout))
            return nn.Sequential(*layers)

        # Dropout after the two deepest encoder levels, as in the reference 2D U-Net.
        self.down = nn.ModuleList(level(n_inputs if i == 0 else w[i - 1], w[i], dropout and i >= 3)
                                  for i in range(5))
        self.pool = ops.pool()
        self.up = nn.ModuleList(
            nn.Sequential(ops.up(2), ops.conv(w[i + 1], w[i], bias=True), nn.ReLU(inplace=True))
            for i in range(4))
        self.dec = nn.ModuleList(level(2 * w[i], w[i], False) for i in range(4))
        self.out = ops.conv(w[0], 1, k=1, bias=True)

    def forward(self, x):
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(4)):
            x = self.dec[i](torch.cat([skips[i], self.up[i](x)], 1))
        return self.out(x)


class UNet2D(_PerSlice2D):
    architecture = "unet2d"
    size_divisor = 16

    def __init__(self, n_inputs: int, width: float = 1.0, output: str = "direct"):
        super().__init__(n_inputs, output)
        self.net = _UNetCore(_Ops(2), n_inputs, width, convs=4, dropout=0.5, batch_norm=False)
        self._init_weights(self.net.out)

    def forward_2d(self, x):
        return self.net(x)


class UNet3D(SynthesisNet):
    architecture = "unet3d"
    size_divisor = 16
    # Batch norm: the plain 3D U-Net (the reference's, unet3d_plain) stalled near the T1 on 8 of 16 demo training
    # runs (seeds, CPU paths, learning rates, warm-up, width, init); with it every run learned (docs/demo.md).
    batch_norm = True

    def __init__(self, n_inputs: int, width: float = 1.0, output: str = "direct"):
        super().__init__(n_inputs, output)
        self.net = _UNetCore(_Ops(3), n_inputs, width, convs=3, dropout=0.0, batch_norm=self.batch_norm)
        self._init_weights(self.net.out)

    def _forward(self, x):
        return self.net(x)


class UNet3DPlain(UNet3D):
    """The reference-style 3D U-Net without normalisation: bit-equal under data parallelism (no batch statistics)."""

    architecture = "unet3d_plain"
    batch_norm = False


ARCHITECTURES: dict[str, Callable[..., SynthesisNet]] = {
    "hrfcn3d": HRFCN3D,
    "hrfcn3d_ref": HRFCN3DRef,
    "hrfcn2d": HRFCN2D,
    "unet2d": UNet2D,
    "unet3d": UNet3D,
    "unet3d_plain": UNet3DPlain,
}
# Architectures whose layers changed, and what their older weight files are now (weights.load_weights says it).
CHANGED_ARCHITECTURES = {"unet3d": "unet3d has batch norm since 2026-12, so older unet3d weights load as unet3d_plain"}


def build_model(architecture: str, n_inputs: int, width: float = 1.0, output: str = "direct") -> SynthesisNet:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return ARCHITECTURES[architecture](n_inputs, width, output)

