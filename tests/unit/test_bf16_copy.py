"""Training steps on a bf16 copy of the model with fp32 master weights (training.bf16_weights)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_config
from lmforge.config import load_config
from lmforge.training.bf16_copy import Bf16Copy, blocker, on_by_default
from lmforge.training.loop import train


def test_the_copy_is_bf16_its_gradients_land_on_the_fp32_weights_and_it_follows_them(tiny_model):
    from transformers import AutoModelForSequenceClassification

    master = AutoModelForSequenceClassification.from_pretrained(str(tiny_model), num_labels=2).train()
    master.get_input_embeddings().weight.requires_grad_(False)  # frozen: no gradient, never copied back
    copy = Bf16Copy(master)
    assert copy.model.training and all(p.dtype == torch.bfloat16 for p in copy.model.parameters())
    assert all(p.dtype == torch.float32 for p in master.parameters())
    assert len(copy.pairs) == sum(p.requires_grad for p in master.parameters())
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    copy.model(input_ids=ids, labels=torch.tensor([1])).loss.backward()
    grads = {id(m): b.grad.clone() for m, b in copy.pairs}
    copy.gradients_to_master()
    for m, b in copy.pairs:
        assert m.grad.dtype == torch.float32 and torch.equal(m.grad, grads[id(m)].float()) and b.grad is None
    assert master.get_input_embeddings().weight.grad is None
    # clipped as clip_grad_norm_ clips the same (exactly cast) gradients in fp32: the same numbers
    holders = []
    for m, b in copy.pairs:
        b.grad = grads[id(m)].clone()
        holders.append(torch.nn.Parameter(torch.zeros_like(m)))
        holders[-1].grad = grads[id(m)].float()
    torch.nn.utils.clip_grad_norm_(holders, 0.01)
    buffers = [m.grad for m, _ in copy.pairs]
    copy.gradients_to_master(0.01)
    assert all(m.grad is buffer for (m, _), buffer in zip(copy.pairs, buffers))  # the fp32 buffers are kept
    assert sum(float(h.grad.norm()) ** 2 for h in holders) ** 0.5 == pytest.approx(0.01, rel=1e-3)  # it did clip
    for (m, _), h in zip(copy.pairs, holders):
        assert torch.equal(m.grad, h.grad)
    with torch.no_grad():
        for m, _ in copy.pairs:
            m.add_(0.01)
    copy.refresh()
    for m, b in copy.pairs:
        assert torch.equal(b, m.detach().to(torch.bfloat16))


def test_where_the_copy_is_on_by_default_and_what_blocks_it():
    cpu = torch.device("cpu")
    assert on_by_default("full", cpu, False, 1)
    for args in (("lora", cpu, False, 1), ("full", torch.device("cuda"), False, 1), ("full", cpu, True, 1), ("full", cpu, False, 2)):
        assert not on_by_default(*args), args
    assert blocker(1, False, False) is None
    assert blocker(2, False, False) == "with several processes"
    assert blocker(1, True, False) == "with training.compile"
    assert blocker(1, False, True) == "with training.anchor_strength"


def test_an_explicit_copy_where_it_cannot_work_is_a_clear_error(tmp_path, tiny_model, cls_data):
    """The anchor's gradient is on the fp32 weights, which the copy's gradients would replace."""
    from lmforge.errors import UserError

    path = make_config(tmp_path, tiny_model, cls_data, epochs=1, precision="bf16", bf16_weights=True, anchor_strength=0.1)
    with pytest.raises(UserError, match="training.bf16_weights: true cannot be used with training.anchor_strength"):
        train(load_config(path), path.parent)


@pytest.mark.parametrize("bf16_weights", [None, False])
def test_a_bf16_run_learns_and_saves_fp32_weights_either_way(tmp_path, tiny_model, cls_data, monkeypatch, bf16_weights):
    """bf16 training on the copy (the default) and under autocast (bf16_weights: false) both fit the
    fixture; the saved model is fp32 either way, and the copy is used only when it applies."""
    from lmforge.training import bf16_copy

    made = []
    real = bf16_copy.Bf16Copy.__init__
    monkeypatch.setattr(bf16_copy.Bf16Copy, "__init__", lambda self, master: made.append(1) or real(self, master))
    path = make_config(tmp_path, tiny_model, cls_data, epochs=20, precision="bf16", bf16_weights=bf16_weights)
    run = train(load_config(path), path.parent)
    assert made == ([1] if bf16_weights is None else [])
    assert json.loads((run / "metrics.json").read_text())["dev"]["accuracy"] >= 0.9
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
