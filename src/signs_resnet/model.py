"""The original SIGNS ResNet50, reading like the architecture table of the original design."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Keras BatchNormalization defaults, kept so weights trained with the original code import exactly.
BN_EPSILON = 1e-3

# One row per stage 2..5: (filters of the three convolutions, identity blocks, stride of the first block).
STAGES = [
    ((64, 64, 256), 2, 1),
    ((128, 128, 512), 3, 2),
    ((256, 256, 1024), 5, 2),
    ((512, 512, 2048), 2, 2),
]


class MatmulConv2d(nn.Conv2d):
    """A convolution that trains as one matrix product, where that is faster on CPU than oneDNN's convolution.

    The same function as nn.Conv2d (same weight, same state dict). 1x1 convolutions always train as a
    product over the pixels; f x f convolutions do when the feature map is small (stages 4 and 5 at 64x64),
    by gathering each pixel's f x f neighbourhood into one row (im2col), since oneDNN's convolution backward
    pass is slow on such maps (docs/performance.md, "What paid, and what did not"). In inference mode it
    stays a convolution, as exporters expect.
    """

    # Largest feature map (pixels) on which an f x f convolution trains through im2col: the measured
    # crossover, stage 4's 4x4 maps in, stage 3's 8x8 out (docs/performance.md, "Training speed").
    IM2COL_MAX_PIXELS = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if not self.training or (self.kernel_size != (1, 1) and height * width > self.IM2COL_MAX_PIXELS):
            return super().forward(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_height, out_width = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        pixels = x.permute(0, 2, 3, 1)  # a view for channels-last input, as is a 1x1 convolution's row matrix
        rows = [pixels[:, i:i + sh * (out_height - 1) + 1:sh, j:j + sw * (out_width - 1) + 1:sw]
                for i in range(kh) for j in range(kw)]
        rows = rows[0] if len(rows) == 1 else torch.stack(rows, dim=4)
        weight = self.weight.reshape(self.out_channels, -1)  # same (channel, i, j) order: a view (see training_layout)
        y = F.linear(rows.reshape(-1, weight.shape[1]), weight)
        return y.view(pixels.shape[0], out_height, out_width, self.out_channels).permute(0, 3, 1, 2)


def training_layout(model: nn.Module) -> nn.Module:
    """`model` in the memory layout it trains fastest in: channels-last activations and stem, as oneDNN's
    kernels want, but the f x f weights of the residual blocks contiguous: the fused AdamW kernel copies
    channels-last parameters on every step, and im2col reads contiguous weights without a copy
    (docs/performance.md, "What paid, and what did not"). The 1x1 weights are the same in either layout."""
    model = model.to(memory_format=torch.channels_last)
    # 1x1 weights contiguous too: the same bytes, but then their strides match their gradients', as
    # DistributedDataParallel's buckets expect (no "grad strides do not match bucket view strides").
    for module in model.modules():
        if isinstance(module, MatmulConv2d):
            module.weight.data = module.weight.data.clone(memory_format=torch.contiguous_format)
    return model


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Convolution ("valid" for 1x1, "same" for f x f at stride 1) followed by batch norm.

    The convolution has no bias: batch norm subtracts the mean right after it, so a bias would
    change nothing (a Keras bias is folded into the batch-norm mean on import).
    """
    return nn.Sequential(
        MatmulConv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels, eps=BN_EPSILON),
    )


class Bottleneck(nn.Module):
    """conv 1x1/s -> BN -> ReLU -> conv fxf -> BN -> ReLU -> conv 1x1 -> BN, plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, f: int, filters: tuple[int, int, int], stride: int, shortcut: nn.Module):
        super().__init__()
        f1, f2, f3 = filters
        # The stride sits on the first 1x1 convolution, as in the original (not on the fxf as in "ResNet v1.5").
        self.branch2a = conv_bn(in_channels, f1, 1, stride)
        self.branch2b = conv_bn(f1, f2, f)
        self.branch2c = conv_bn(f2, f3, 1)
        self.branch1 = shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.branch2a(x))
        y = self.relu(self.branch2b(y))
        y = self.branch2c(y)
        return self.relu(y + self.branch1(x))


def identity_block(in_channels: int, f: int, filters: tuple[int, int, int]) -> Bottleneck:
    """The identity block: input and output have the same shape (in_channels == filters[2])."""
    if in_channels != filters[2]:
        raise ValueError(f"identity_block needs in_channels == filters[2], got {in_channels} and {filters[2]}")
    return Bottleneck(in_channels, f, filters, stride=1, shortcut=nn.Identity())


def convolutional_block(in_channels: int, f: int, filters: tuple[int, int, int], s: int = 2) -> Bottleneck:
    """The convolutional block: stride s on the first 1x1 convolution and a 1x1/s conv + BN shortcut."""
    return Bottleneck(in_channels, f, filters, stride=s, shortcut=conv_bn(in_channels, filters[2], 1, s))


class ResNet50Model(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int] = (64, 64, 3), classes: int = 6):
        super().__init__()
        height, width, channels = input_shape
        self.input_shape = tuple(input_shape)
        self.num_classes = classes
        self.stage1 = nn.Sequential(
            nn.ZeroPad2d(3),
            nn.Conv2d(channels, 64, 7, stride=2, bias=False),
            nn.BatchNorm2d(64, eps=BN_EPSILON),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
        )
        stages, in_channels = [], 64
        for filters, identity_blocks, stride in STAGES:
            blocks = [convolutional_block(in_channels, 3, filters, s=stride)]
            blocks += [identity_block(filters[2], 3, filters) for _ in range(identity_blocks)]
            stages.append(nn.Sequential(*blocks))
            in_channels = filters[2]
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        pooled_height, pooled_width = self.pooled_size(height, width)
        self.fc = nn.Linear(in_channels * pooled_height * pooled_width, classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation of the convolutions, and the last batch norm of every residual branch scaled
        to zero so that each block starts as the identity (Goyal et al., 2017). From scratch on SIGNS this
        learns faster than PyTorch's default initialisation (docs/recipe.md, "Hold-out runs")."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, Bottleneck):
                nn.init.zeros_(module.branch2c[1].weight)

    @staticmethod
    def pooled_size(height: int, width: int) -> tuple[int, int]:
        """Height and width of the features after the average pool, which the dense layer flattens."""

        def side(n: int) -> int:
            n = (n + 6 - 7) // 2 + 1  # zero-pad 3, conv 7x7/2
            n = (n - 3) // 2 + 1  # max-pool 3x3/2
            for _, _, stride in STAGES:
                n = (n - 1) // stride + 1  # 1x1 convolution at stride s
            n //= 2  # average pool 2x2
            if n < 1:
                raise ValueError(f"input size {height}x{width} is too small for ResNet50 (at least 37x37)")
            return n

        return side(height), side(width)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of stages 1..5, for inspection and tests."""
        outputs = []
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4, self.stage5):
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(x)
        x = self.stage5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(self.flatten(self.pool(x)))


def ResNet50(input_shape: tuple[int, int, int] = (64, 64, 3), classes: int = 6) -> ResNet50Model:
    """The original ResNet50: takes N x C x H x W floats scaled to [0, 1], returns N x classes logits."""
    return ResNet50Model(input_shape, classes)
