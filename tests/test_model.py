"""The classifier's building blocks."""
from __future__ import annotations

import pytest
import torch

from voiceguard.model import MaxPool2x2


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
