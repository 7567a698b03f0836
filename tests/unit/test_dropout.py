"""FastDropout (training/dropout.py): nn.Dropout's behaviour from a third of the random numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.training.dropout import LEVELS, FastDropout, keep_scale, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_rate_and_the_scale_keep_the_expected_value(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(1000, 999, dtype=dtype)  # not a multiple of 3: the last draw is cut
    y = FastDropout(p).train()(x)
    dropped = round(p * LEVELS)
    assert y.shape == x.shape and y.dtype == dtype
    assert abs((y == 0).float().mean().item() - p) < 0.005
    kept = y[y != 0].float()
    assert torch.allclose(kept, torch.full_like(kept, float(torch.tensor(LEVELS / (LEVELS - dropped), dtype=dtype))))
    assert abs(y.float().mean().item() - 1.0) < 0.02


def test_masks_are_independent_across_elements_and_calls():
    torch.manual_seed(1)
    a, b = (keep_scale(torch.Size([300_000]), 0.5, torch.float32) > 0 for _ in range(2))
    # neighbours (same 64-bit draw) and two calls: each pair kept together a quarter of the time
    assert abs((a[:-1] & a[1:]).float().mean().item() - 0.25) < 0.01
    assert abs((a & b).float().mean().item() - 0.25) < 0.01


def test_the_same_seed_gives_the_same_mask_and_eval_mode_is_the_identity():
    x = torch.randn(4, 7, 16)
    torch.manual_seed(3)
    first = FastDropout(0.1).train()(x)
    torch.manual_seed(3)
    assert torch.equal(first, FastDropout(0.1).train()(x))
    assert FastDropout(0.1).eval()(x) is x and FastDropout(0.0).train()(x) is x
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        FastDropout(1.5)


def test_the_gradient_is_the_mask():
    torch.manual_seed(4)
    x = torch.randn(50, 60, requires_grad=True)
    y = FastDropout(0.3).train()(x)
    y.sum().backward()
    mask = torch.where(y != 0, LEVELS / (LEVELS - round(0.3 * LEVELS)), 0.0)
    assert torch.allclose(x.grad, mask) and torch.allclose(y, x.detach() * mask)


def test_a_model_gets_fast_dropout_where_it_had_dropout():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=16, attention_probs_dropout_prob=0.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    positive = sum(1 for m in model.modules() if type(m) is nn.Dropout and m.p > 0)
    assert use_fast_dropout(model) == positive > 0
    assert not any(type(m) is nn.Dropout and m.p > 0 for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # eval: no dropout
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
