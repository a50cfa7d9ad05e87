"""The classifier's building blocks."""
from __future__ import annotations

import pytest
import torch

from voiceguard.model import LCNN, MaxFeatureMap, MaxPool2x2


@pytest.mark.parametrize("shape", [(3, 8, 60, 134), (2, 16, 15, 33), (1, 4, 2, 3)])
def test_the_fast_pooling_gives_max_pool_2d_s_output_with_and_without_autograd(shape):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    reference, pool = torch.nn.MaxPool2d(2), MaxPool2x2()
    with torch.inference_mode():
        fast = pool(x)
        assert torch.equal(fast, reference(x))  # odd sizes floored alike
        assert fast.is_contiguous(memory_format=torch.channels_last)  # what the next convolution wants
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert torch.equal(pool(a), reference(b))
    pool(a).square().sum().backward()
    reference(b).square().sum().backward()
    assert torch.equal(a.grad, b.grad)


def _reference_mfm(x):
    a, b = x.chunk(2, dim=1)
    return torch.maximum(a, b)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_max_feature_map_s_gradient_is_torch_maximum_s(layout):
    torch.manual_seed(1)
    x = torch.randn(3, 16, 20, 31).contiguous(memory_format=layout)
    mfm = MaxFeatureMap()
    with torch.inference_mode():
        assert torch.equal(mfm(x), _reference_mfm(x))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = mfm(a)
    assert torch.equal(out, _reference_mfm(b))
    g = torch.randn_like(out).contiguous(memory_format=torch.contiguous_format)  # a layout other than the mask's
    out.backward(g)
    _reference_mfm(b).backward(g)
    assert torch.equal(a.grad, b.grad)
    assert torch.autograd.gradcheck(mfm, x[:1, :4, :3, :5].double().requires_grad_())


def test_a_network_trains_to_the_same_gradients_with_the_fast_max_feature_map(monkeypatch):
    model = LCNN()
    model.train()
    feats = torch.randn(4, 60, 100)

    def grads():
        torch.manual_seed(0)  # the same dropout
        model.zero_grad()
        model(feats).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    fast = grads()
    monkeypatch.setattr(MaxFeatureMap, "forward", lambda self, x: _reference_mfm(x))
    for got, want in zip(fast, grads()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
