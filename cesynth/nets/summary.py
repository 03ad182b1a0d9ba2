"""Measurements of a synthesis network: parameter count, theoretical receptive field and convolution FLOPs (the
slab halo of inference and the GPU estimates of BENCHMARKS.md use them)."""

import copy

import torch
import torch.nn as nn

from cesynth.nets.models import SynthesisNet, build_model


def conv_flops(model: nn.Module, x: torch.Tensor) -> int:
    """2 x multiply-adds of all convolutions, counted from output shapes on the meta device."""
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        k = 1
        for s in m.kernel_size:
            k *= s
        total += 2 * out.numel() * (m.in_channels // m.groups) * k

    meta = copy.deepcopy(model).to("meta").eval()
    handles = [m.register_forward_hook(hook) for m in meta.modules()
               if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    with torch.no_grad():
        meta(x.to("meta"))
    for h in handles:
        h.remove()
    return total


def receptive_field(model: SynthesisNet, patch_shape, n_inputs: int) -> tuple[int, int, int]:
    """Extent (D, H, W) of input voxels that can influence the patch-centre output voxel.

    Theoretical RF, computed exactly by backprop through a linearised copy: all conv
    weights positive, biases zero, BN as identity (eval, fresh stats), max-pool
    replaced by avg-pool, positive input. Then every activation is positive, ReLUs
    pass everything, and no gradient can cancel, so the gradient support is the RF.
    Without biases the copy is linear up to the output sigmoid, so a tiny input keeps
    the residual sums from saturating the sigmoid (float64 keeps edge gradients > 0).
    Channel counts do not change the RF, so a width-0 copy (1 channel) is used.
    The result is clipped to the patch.
    """
    lin = build_model(model.architecture, n_inputs, width=1e-6).double().eval()
    for name, m in list(lin.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool3d):
                setattr(m, cname, nn.AvgPool3d(child.kernel_size))
            elif isinstance(child, nn.MaxPool2d):
                setattr(m, cname, nn.AvgPool2d(child.kernel_size))
    with torch.no_grad():
        for m in lin.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    x = torch.full((1, n_inputs, *patch_shape), 1e-100, dtype=torch.float64, requires_grad=True)
    y = lin(x)
    d, h, w = (s // 2 for s in patch_shape)
    y[0, 0, d, h, w].backward()
    return nonzero_extent(x.grad)


def nonzero_extent(grad: torch.Tensor) -> tuple[int, int, int]:
    """Bounding-box size (D, H, W) of the nonzero entries of a (B, M, D, H, W) tensor."""
    nz = grad.abs().sum(dim=(0, 1)) > 0
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = torch.nonzero(nz.any(dim=other)).flatten()
        out.append(int(idx.max() - idx.min() + 1) if len(idx) else 0)
    return tuple(out)


def model_summary(model: SynthesisNet, patch_shape=(3, 256, 192), n_inputs: int = 3) -> dict:
    x = torch.zeros(1, n_inputs, *patch_shape)
    return dict(
        params=sum(p.numel() for p in model.parameters()),
        receptive_field=receptive_field(model, patch_shape, n_inputs),
        flops=conv_flops(model, x),
    )
