"""PyTorch copies of :class:`repair_jax.models.SmallCNN` and :class:`repair_jax.models.ResNet` (basic
blocks) in eval mode, holding the weights of given flax variables, so that both frameworks compute
the same function: the baseline side of ``benchmarks/explain.py`` (Captum). Imports torch: only
imported when the ``bench`` extra is installed.

Layouts: flax conv kernels (kh, kw, in, out) -> torch (out, in, kh, kw); dense kernels (in, out) ->
(out, in); convolutions pad as flax's ``SAME`` (asymmetric for stride 2 on even sizes); the CNN
flattens in flax's (h, w, c) order. Inputs are NCHW.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float32))


class SameConv(torch.nn.Module):
    """A bias-free convolution with flax's ``SAME`` padding; ``self.conv`` is the layer GradCAM reads."""

    def __init__(self, kernel, stride: int = 1):
        super().__init__()
        k = np.asarray(kernel)
        self.conv = torch.nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], stride=stride, bias=False)
        self.conv.weight.data = _tensor(k.transpose(3, 2, 0, 1))
        self.kernel_size, self.stride = k.shape[:2], stride

    def forward(self, x):
        pads = []
        for size, k in zip(reversed(x.shape[2:]), reversed(self.kernel_size)):  # F.pad: last dim first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + k - size, 0)
            pads += [total // 2, total - total // 2]
        return self.conv(F.pad(x, pads))


def batch_norm(params, stats, dims: int) -> torch.nn.Module:
    """Eval-mode BatchNorm (1d or 2d) with flax's scale, bias and running mean / variance."""
    m = (torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm1d)(np.asarray(params["scale"]).size, eps=1e-5)
    m.weight.data, m.bias.data = _tensor(params["scale"]), _tensor(params["bias"])
    m.running_mean.data, m.running_var.data = _tensor(stats["mean"]), _tensor(stats["var"])
    return m.eval()


def linear(params) -> torch.nn.Linear:
    k = np.asarray(params["kernel"])
    m = torch.nn.Linear(k.shape[0], k.shape[1], bias="bias" in params)
    m.weight.data = _tensor(k.T)
    if "bias" in params:
        m.bias.data = _tensor(params["bias"])
    return m


class SmallCNN(torch.nn.Module):
    """:class:`repair_jax.models.SmallCNN` (without Permuted AdaIN) in eval mode."""

    def __init__(self, variables):
        super().__init__()
        p, s = variables["params"], variables["batch_stats"]
        self.convs = torch.nn.ModuleList([SameConv(p[f"Conv_{i}"]["kernel"]) for i in range(4)])
        self.bns = torch.nn.ModuleList([batch_norm(p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"], 2) for i in range(4)])
        self.dense, self.out = linear(p["Dense_0"]), linear(p["Dense_1"])
        self.bn_dense = batch_norm(p["BatchNorm_4"], s["BatchNorm_4"], 1)
        self.last_conv = self.convs[-1].conv

    def forward(self, x):
        h = x
        for i in range(4):
            h = F.relu(self.bns[i](self.convs[i](h)))
            if i % 2:
                h = F.max_pool2d(h, 2)
        h = h.permute(0, 2, 3, 1).flatten(1)  # flax's (h, w, c) order
        return self.out(F.relu(self.bn_dense(self.dense(h))))


class BasicBlock(torch.nn.Module):
    def __init__(self, p, s, stride: int):
        super().__init__()
        self.conv0, self.bn0 = SameConv(p["Conv_0"]["kernel"], stride), batch_norm(p["BatchNorm_0"], s["BatchNorm_0"], 2)
        self.conv1, self.bn1 = SameConv(p["Conv_1"]["kernel"]), batch_norm(p["BatchNorm_1"], s["BatchNorm_1"], 2)
        self.shortcut = None
        if "Conv_2" in p:
            self.shortcut = torch.nn.Sequential(SameConv(p["Conv_2"]["kernel"], stride),
                                                batch_norm(p["BatchNorm_2"], s["BatchNorm_2"], 2))

    def forward(self, x):
        h = self.bn1(self.conv1(F.relu(self.bn0(self.conv0(x)))))
        return F.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(torch.nn.Module):
    """:class:`repair_jax.models.ResNet` with basic blocks in eval mode, for inputs of ``image_size``
    (the strides depend on it as in flax: 2 opens stages 2-4 while the map is larger than 1x1)."""

    def __init__(self, variables, stage_sizes, image_size: int):
        super().__init__()
        p, s = variables["params"], variables["batch_stats"]
        self.stem, self.bn = SameConv(p["Conv_0"]["kernel"]), batch_norm(p["BatchNorm_0"], s["BatchNorm_0"], 2)
        blocks, size = [], image_size
        for i, n_blocks in enumerate(stage_sizes):
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0 and size > 1) else 1
                name = f"BasicBlock_{len(blocks)}"
                blocks.append(BasicBlock(p[name], s[name], stride))
                size = math.ceil(size / stride)
        self.blocks = torch.nn.ModuleList(blocks)
        self.fc = linear(p["Dense_0"])
        last = self.blocks[-1]
        self.last_conv = (last.shortcut[0] if last.shortcut is not None else last.conv1).conv

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        return self.fc(h.mean(dim=(2, 3)))
