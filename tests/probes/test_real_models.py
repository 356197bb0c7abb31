"""Every registered probe on the models users train: BERT and GPT-2 (Hugging Face, dict batches, padding,
-100 labels), a ViT, and a ResNet-18; and the Python contract for the model's own loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape import probe as registry
from landscape.autodiff import DoubleBackwardError
from landscape.checkpoints import Checkpoint
from landscape.data import as_batches
from landscape.evaluate import evaluate
from landscape.losses import causal_lm_cross_entropy
from landscape.presets import apply_budget
from landscape.probe import ProbeContext
from probes import hessian, sharpness
from tests.real_models import images, resnet18, tiny_bert, tiny_gpt2, tiny_vit, token_batches

pytest.importorskip("transformers")


def _run_every_probe(model, loss, train, test=None):
    train, test = as_batches(train), None if test is None else as_batches(test)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoints = [Checkpoint(0, __import__("pathlib").Path("a")), Checkpoint(1, __import__("pathlib").Path("b"))]
    results = {}
    for name, params in apply_budget({n: {} for n in registry.available()}, "quick").items():
        ctx = ProbeContext(model=model, loss_fn=loss, train=train, test=test, step=1, checkpoints=checkpoints,
                           load_state=lambda c: state, lr=0.1)
        results[name] = registry.get(name).run(ctx, **registry.resolve_params(registry.get(name), params))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    return results


def _finite(result, keys):
    missing = [k for k in keys if k not in result.scalars or not math.isfinite(result.scalars[k])]
    assert result.valid and not missing, (result.message, missing)


def test_every_probe_on_a_bert_classifier_with_the_models_own_loss():
    model = tiny_bert()
    train = token_batches([[6, 3, 5], [4, 6]], seed=1, classes=3)
    results = _run_every_probe(model, "model", train, token_batches([[5, 2]], seed=2, classes=3))
    _finite(results["metrics"], ["train_loss", "train_accuracy", "test_loss", "grad_norm"])
    _finite(results["hessian"], ["lambda_max", "trace"])
    _finite(results["sharpness"], ["worst_case", "average_case", "first_order_flatness"])
    _finite(results["collapse"], ["nc1", "nc4_ncc_mismatch"])
    assert results["collapse"].params["resolved_layer"] == "classifier"
    _finite(results["grokking"], ["sc_fraction", "nlm_cosine", "feature_change"])
    _finite(results["noise"], ["trace_cov", "b_simple", "b_noise"])
    assert results["slices"].valid and np.isfinite(results["slices"].arrays["loss"]).all()


def test_every_probe_on_a_causal_lm_with_padding_and_ignored_tokens():
    model = tiny_gpt2()
    train = token_batches([[6, 3, 5], [4, 2]], seed=3, prompt=2)
    results = _run_every_probe(model, "model", train)
    _finite(results["metrics"], ["train_loss", "train_accuracy", "train_perplexity"])
    assert results["metrics"].scalars["train_perplexity"] == pytest.approx(
        math.exp(results["metrics"].scalars["train_loss"]))
    _finite(results["hessian"], ["lambda_max"])
    _finite(results["sharpness"], ["worst_case", "first_order_flatness"])
    _finite(results["collapse"], ["nc1"])  # token-level: the feature at t against the label at t + 1
    assert results["collapse"].params["resolved_layer"] == "lm_head"
    _finite(results["grokking"], ["sc_fraction", "train_accuracy"])
    assert not results["noise"].valid and "token-level loss" in results["noise"].message


def test_every_probe_on_a_vit():
    model = tiny_vit()
    x, y = images(12, size=8, classes=3)
    batches = [{"pixel_values": x[:7], "labels": y[:7]}, {"pixel_values": x[7:], "labels": y[7:]}]
    results = _run_every_probe(model, "model", batches)
    _finite(results["hessian"], ["lambda_max"])
    _finite(results["collapse"], ["nc1"])
    _finite(results["sharpness"], ["worst_case"])


@pytest.mark.slow
def test_every_probe_on_a_full_resnet18():
    model = resnet18(num_classes=10)
    assert sum(p.numel() for p in model.parameters()) > 11_000_000
    x, y = images(32, size=32, classes=10)
    results = _run_every_probe(model, nn.CrossEntropyLoss(), [(x[:16], y[:16]), (x[16:], y[16:])])
    _finite(results["hessian"], ["lambda_max"])
    _finite(results["sharpness"], ["worst_case", "average_case"])
    _finite(results["collapse"], ["nc1"])


@pytest.mark.slow
def test_every_probe_on_a_narrow_resnet18():
    model = resnet18(num_classes=4, width=2)
    x, y = images(8, size=8, classes=4)
    results = _run_every_probe(model, nn.CrossEntropyLoss(), [(x[:5], y[:5]), (x[5:], y[5:])])
    _finite(results["hessian"], ["lambda_max"])
    _finite(results["sharpness"], ["worst_case"])
    assert results["collapse"].params["resolved_layer"] == "fc"


def test_the_contract_model_loss_and_loss_function_agree():
    model = tiny_gpt2(seed=4).double()
    batches = token_batches([[5, 3], [6, 2, 4]], seed=5, prompt=1)
    group = ["transformer.h.0.attn.c_attn.bias", "transformer.ln_f"]
    own = hessian.eigenvalues(model, "model", batches, k=1, tol=1e-6, params=group)
    function = hessian.eigenvalues(model, causal_lm_cross_entropy(), batches, k=1, tol=1e-6, params=group)
    # Hugging Face computes its own loss in float32, so the two agree to float32 precision.
    assert np.allclose(own.values, function.values, rtol=1e-5)
    assert sharpness.gradient_norm(model, "model", batches) == pytest.approx(
        sharpness.gradient_norm(model, causal_lm_cross_entropy(), batches), rel=1e-5)


def test_a_loss_function_receives_the_extracted_logits_and_the_labels():
    model = tiny_bert()
    batches = token_batches([[4, 6], [5]], seed=6, classes=3)
    seen = []

    def loss(logits, labels):
        seen.append((tuple(logits.shape), labels))
        return nn.functional.cross_entropy(logits, labels)

    hessian.eigenvalues(model, loss, batches, k=1, tol=1e-2)
    assert seen and all(shape[1] == 3 and labels.dim() == 1 for shape, labels in seen)
    assert evaluate(model, loss, batches).loss == pytest.approx(evaluate(model, "model", batches).loss, rel=1e-6)


class _FusedAttention(nn.Module):
    """Self-attention that calls PyTorch's fused CPU kernel directly (no math fallback can reach it)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)

    def forward(self, x):
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]
        return out.squeeze(1).mean(dim=1)


def test_a_module_without_a_second_derivative_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Tanh(), _FusedAttention()), nn.Linear(4, 2))
    data = (torch.randn(6, 5, 4), torch.tensor([0, 1, 0, 1, 1, 0]))
    with pytest.raises(DoubleBackwardError) as info:
        hessian.eigenvalues(model, nn.CrossEntropyLoss(), data, k=1)
    message = str(info.value)
    assert "module '1.1' (_FusedAttention) uses aten::_scaled_dot_product_flash_attention_for_cpu_backward" in message
    assert "attn_implementation='eager'" in message and "\n" not in message


def test_gradient_noise_on_dict_batches_with_the_models_own_loss_matches_the_definition():
    """tr Σ and |G|² from per-sample gradients taken here one sequence at a time by plain autograd
    (float64 BERT, padded dict batches): the probe's numbers must be the same sums."""
    from probes import noise

    model = tiny_bert().double()
    batches = token_batches([[6, 3, 5], [4, 6, 2, 5]], seed=1, classes=3)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for batch in batches:
        for i in range(len(batch["labels"])):
            one = {k: v[i : i + 1] for k, v in batch.items()}
            grads = torch.autograd.grad(model(**one).loss, params, allow_unused=True, materialize_grads=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    g = torch.stack(rows)
    mean = g.mean(dim=0)
    want_cov = float(((g - mean) ** 2).sum() / len(g))
    found = noise.gradient_noise(model, "model", batches, b_noise=False)
    assert found["n_samples"] == 7
    assert found["trace_cov"] == pytest.approx(want_cov, rel=1e-10)
    assert found["grad_norm_sq"] == pytest.approx(float(mean @ mean), rel=1e-10)
