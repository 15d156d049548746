import pytest
import torch

from signs_resnet import ResNet50, convolutional_block, identity_block
from signs_resnet.model import Bottleneck, MatmulConv2d, training_layout


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNet50(input_shape=(64, 64, 3), classes=6)


def test_stage_output_shapes_match_the_original_table(model):
    shapes = [tuple(t.shape[1:]) for t in model.features(torch.rand(2, 3, 64, 64))]
    assert shapes[1:] == [(256, 15, 15), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]


def test_parameter_count_is_about_23_5_million(model):
    count = sum(p.numel() for p in model.parameters())
    assert 23_400_000 < count < 23_700_000


def test_every_block_starts_as_the_identity(model):
    blocks = [block for block in model.modules() if isinstance(block, Bottleneck)]
    assert len(blocks) == 16
    for block in blocks:
        assert torch.equal(block.branch2c[1].weight, torch.zeros_like(block.branch2c[1].weight))
    x = torch.rand(2, 256, 15, 15)  # an identity block of stage 2 passes its (non-negative) input through
    assert torch.allclose(model.stage2[1].eval()(x), x)


def test_every_parameter_gets_a_finite_gradient():
    model = ResNet50().train()
    step = torch.optim.SGD(model.parameters(), lr=0.1)  # one step first: zero-initialised scales move off zero
    for _ in range(2):
        step.zero_grad()
        logits = model(torch.rand(4, 3, 64, 64))
        assert logits.shape == (4, 6) and torch.isfinite(logits).all()
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
        step.step()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("height, width, classes", [(96, 96, 10), (128, 80, 3), (37, 37, 6)])
def test_other_input_sizes_and_class_counts(height, width, classes):
    net = ResNet50(input_shape=(height, width, 3), classes=classes).eval()
    assert net(torch.rand(1, 3, height, width)).shape == (1, classes)


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="too small"):
        ResNet50(input_shape=(36, 36, 3))


def test_blocks_keep_the_original_shapes():
    x = torch.rand(1, 256, 15, 15)
    assert identity_block(256, 3, (64, 64, 256))(x).shape == x.shape
    block = convolutional_block(256, 3, (128, 128, 512), s=2)
    assert block(x).shape == (1, 512, 8, 8)
    # The stride is on the first 1x1 convolution, as in the original.
    assert block.branch2a[0].stride == (2, 2) and block.branch2b[0].stride == (1, 1)
    with pytest.raises(ValueError):
        identity_block(128, 3, (64, 64, 256))


@pytest.mark.parametrize("kernel, stride, size, layout, weight_layout", [
    (1, 1, 15, torch.channels_last, torch.contiguous_format), (1, 2, 15, torch.channels_last, torch.channels_last),
    (1, 2, 15, torch.contiguous_format, torch.contiguous_format),
    (3, 1, 4, torch.channels_last, torch.contiguous_format), (3, 1, 2, torch.channels_last, torch.contiguous_format),
    (3, 2, 4, torch.channels_last, torch.contiguous_format), (3, 1, 4, torch.channels_last, torch.channels_last),
    (3, 1, 3, torch.contiguous_format, torch.contiguous_format),
    (3, 1, 15, torch.channels_last, torch.contiguous_format)])
def test_matmul_convolution_trains_as_the_same_function(kernel, stride, size, layout, weight_layout):
    conv = MatmulConv2d(64, 128, kernel, stride, padding=kernel // 2, bias=False).to(memory_format=weight_layout)
    x = torch.randn(4, 64, size, size).contiguous(memory_format=layout).requires_grad_()
    trained = conv.train()(x)
    trained.square().sum().backward()
    gradients = x.grad.clone(), conv.weight.grad.clone()
    x.grad, conv.weight.grad = None, None
    reference = torch.nn.functional.conv2d(x, conv.weight, stride=stride, padding=kernel // 2)
    reference.square().sum().backward()
    out = (size - 1) // stride + 1
    assert trained.shape == reference.shape == (4, 128, out, out)
    assert torch.allclose(trained, reference, atol=1e-4)
    assert torch.allclose(gradients[0], x.grad, atol=1e-3)
    assert torch.allclose(gradients[1], conv.weight.grad, rtol=1e-4, atol=1e-2)
    assert torch.allclose(conv.eval()(x), reference, atol=1e-4)


def test_training_layout_keeps_block_weights_contiguous_and_the_function():
    model = ResNet50().train()
    x = torch.rand(2, 3, 64, 64)
    expected = model(x)
    laid_out = training_layout(model)
    assert laid_out.stage1[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert not laid_out.stage1[1].weight.is_contiguous()
    assert all(block.branch2b[0].weight.is_contiguous() for stage in (laid_out.stage2, laid_out.stage5)
               for block in stage)
    assert torch.allclose(laid_out(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4)


def test_training_layout_gives_gradients_the_strides_of_their_parameters():
    """DistributedDataParallel's gradient buckets are laid out like the parameters: a gradient in another
    layout is copied, with a warning on every start."""
    from signs_resnet.model import training_layout

    model = training_layout(ResNet50((64, 64, 3), 6))
    model(torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)).sum().backward()
    mismatched = [name for name, p in model.named_parameters() if p.stride() != p.grad.stride()]
    assert mismatched == []
