"""The curvature of a real transformer's token-level loss is the exact Hessian, with padding and -100 labels.

Ground truth: the full-data loss written independently as Σ (summed next-token negative log-likelihood
over every non-ignored label) / (number of those labels), over all batches at once, on an eager-attention
copy of the model, differentiated twice by ``torch.autograd.functional.hessian`` in float64 w.r.t. a 272-parameter
subset. The operator runs the stock ``sdpa`` model, whose default CPU kernel has no second derivative:
it must switch to the math kernel by itself. Batches have unequal sizes and lengths, so a mean of batch
means (or sample weighting) would be off by far more than the 1e-8 tolerance (float64 rounding of these
sums is ~1e-15). The model's own loss (``loss="model"``) is computed by Hugging Face in float32 (its loss
upcasts logits with ``.float()``, which for a float64 model casts them down), so with it the operator is
compared at float32 precision: 1e-5 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from landscape.curvature import CurvatureOperator
from landscape.data import as_batches
from landscape.evaluate import evaluate
from landscape.losses import causal_lm_cross_entropy
from tests.real_models import tiny_gpt2, token_batches

pytest.importorskip("transformers")

# 48 attention biases (default run); 144 parameters spread over attention, MLP and both layer norms and
# the 272 of the attention output projection (slow run).
BIASES = ["transformer.h.0.attn.c_attn.bias"]
SPREAD = ["transformer.h.0.ln_1", "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.bias",
          "transformer.h.0.mlp.c_proj.bias", "transformer.ln_f"]
PROJECTION = ["transformer.h.0.attn.c_proj"]
LENGTHS = [[5, 2], [3], [4, 1, 2]]


def _models():
    sdpa = tiny_gpt2(seed=1).double()
    eager = tiny_gpt2(seed=1, attn="eager").double()
    eager.load_state_dict(sdpa.state_dict())
    return sdpa, eager


def _exact_hessian(model, batches, group) -> np.ndarray:
    names = [n for n, _ in model.named_parameters() if any(n == g or n.startswith(g + ".") for g in group)]
    shapes = [model.get_parameter(n).shape for n in names]
    base = torch.cat([model.get_parameter(n).detach().reshape(-1) for n in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        named, offset = {}, 0
        for name, shape in zip(names, shapes):
            count = int(np.prod(shape))
            named[name] = flat[offset : offset + count].view(shape)
            offset += count
        total, count = 0.0, 0
        for b in batches:
            logits = functional_call(model, named, (), {"input_ids": b["input_ids"],
                                                        "attention_mask": b["attention_mask"]}).logits
            targets = b["labels"][:, 1:].reshape(-1)
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets,
                                                    ignore_index=-100, reduction="sum")
            total = total + nll
            count += int((targets != -100).sum())
        return total / count

    # torch.autograd.functional.hessian: on this model the torch.func transforms (torch.func.hessian, and
    # jacrev of jacrev) return a block for the final layer norm's weight that is not symmetric (off by 0.07,
    # torch 2.13) and that central differences of the gradient contradict; the autograd form is symmetric
    # to 1e-15 and agrees with them.
    exact = torch.autograd.functional.hessian(loss, base, vectorize=True).detach().numpy()
    assert np.abs(exact - exact.T).max() < 1e-12
    return exact, float(loss(base).detach())


def _dense(op: CurvatureOperator) -> np.ndarray:
    eye = torch.eye(op.size, dtype=op.dtype)
    return op.matmat(eye).detach().numpy()


@pytest.mark.parametrize("loss, group, size, tol", [
    ("function", BIASES, 48, 1e-8),
    pytest.param("function", SPREAD, 144, 1e-8, marks=pytest.mark.slow),
    pytest.param("function", PROJECTION, 272, 1e-8, marks=pytest.mark.slow),
    pytest.param("model", SPREAD, 144, 1e-5, marks=pytest.mark.slow),
])
def test_token_weighted_curvature_is_the_exact_hessian(loss, group, size, tol):
    sdpa, eager = _models()
    raw = token_batches(LENGTHS, seed=2, prompt=1)
    exact, exact_loss = _exact_hessian(eager, raw, group)
    loss_fn = "model" if loss == "model" else causal_lm_cross_entropy()
    op = CurvatureOperator(sdpa, loss_fn, as_batches(raw), params=group, backend="autograd_batched")
    assert op.size == size
    assert op.loss == pytest.approx(exact_loss, rel=tol / 10)
    dense = _dense(op)
    assert np.abs(dense - exact).max() < tol * max(1.0, np.abs(exact).max())
    assert np.abs(exact).max() > 1e-3  # the block is far from zero, so the comparison means something
    # evaluate() gives the same token-weighted mean, and the perplexity is its exponential
    result = evaluate(sdpa, loss_fn, raw)
    assert result.loss == pytest.approx(exact_loss, rel=tol / 10)
    assert result.perplexity == pytest.approx(np.exp(result.loss), rel=1e-12)
    assert result.n_tokens == sum(int((b["labels"][:, 1:] != -100).sum()) for b in raw)


def test_one_sequence_per_product_weighs_each_by_its_tokens():
    # max_batch_size=1: six parts of 1 to 5 labelled tokens, summed by their token counts
    sdpa, eager = _models()
    raw = token_batches(LENGTHS, seed=2, prompt=1)
    exact, _ = _exact_hessian(eager, raw, BIASES)
    op = CurvatureOperator(sdpa, causal_lm_cross_entropy(), as_batches(raw), params=BIASES, max_batch_size=1)
    assert len(op.data) == sum(len(lengths) for lengths in LENGTHS)
    assert np.abs(_dense(op) - exact).max() < 1e-8 * max(1.0, np.abs(exact).max())


def test_the_mean_of_batch_means_would_be_wrong():
    # The test above can fail: sample weighting of these batches gives a different loss.
    sdpa, _ = _models()
    raw = token_batches(LENGTHS, seed=2, prompt=1)
    batches = as_batches(raw)
    with torch.no_grad():
        per_batch = [float(sdpa(**b).loss) for b in raw]
    samples = [b["input_ids"].shape[0] for b in raw]
    by_samples = sum(v * n for v, n in zip(per_batch, samples)) / sum(samples)
    assert abs(by_samples - evaluate(sdpa, "model", batches).loss) > 1e-4


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_the_func_backend_on_gpt2_equals_the_autograd_backend(kind: str) -> None:
    """vmap over forward-over-reverse products traces a Hugging Face GPT-2 on padded dict batches: its
    products equal the double-backward ones to rounding (float64; 1e-12 of the largest entry)."""
    model = tiny_gpt2().double()
    batches = token_batches([[6, 3, 5], [4, 2]], seed=3, prompt=2)
    loss = causal_lm_cross_entropy()
    vectors = None
    products = []
    for backend in ("autograd", "func"):
        op = CurvatureOperator(model, loss, batches, params="transformer.h.0.mlp", kind=kind, backend=backend)
        if vectors is None:
            vectors = torch.randn(op.size, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        products.append(op.matmat(vectors))
    scale = float(products[0].abs().max())
    assert scale > 0
    assert float((products[1] - products[0]).abs().max()) <= 1e-12 * scale
