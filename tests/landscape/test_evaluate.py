import pytest
import torch
from torch import nn

from landscape.data import as_batches
from landscape.evaluate import LossError, correct_count, evaluate, gradient


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(11, 4), torch.randint(0, 3, (11,))
    return model, x, y


def test_unequal_batches_give_the_full_batch_mean():
    model, x, y = _setup()
    loss_fn = nn.CrossEntropyLoss()
    whole = evaluate(model, loss_fn, as_batches((x, y)))
    split = evaluate(model, loss_fn, as_batches([(x[:2], y[:2]), (x[2:], y[2:])]))
    assert split.loss == pytest.approx(whole.loss, rel=1e-6)
    assert split.accuracy == whole.accuracy
    expected = float((model(x).argmax(1) == y).float().mean())
    assert whole.accuracy == pytest.approx(expected)
    assert whole.n_samples == 11


def test_regression_has_no_accuracy():
    model, x, _ = _setup()
    result = evaluate(model, nn.MSELoss(), as_batches((x, torch.randn(11, 3))))
    assert result.accuracy is None


def test_non_scalar_loss_is_rejected():
    model, x, y = _setup()
    with pytest.raises(LossError, match="scalar"):
        evaluate(model, nn.CrossEntropyLoss(reduction="none"), as_batches((x, y)))


def test_gradient_matches_autograd_on_all_data_and_leaves_grad_alone():
    model, x, y = _setup()
    loss_fn = nn.CrossEntropyLoss()
    grads = gradient(model, loss_fn, as_batches([(x[:3], y[:3]), (x[3:], y[3:])]))
    assert model.weight.grad is None
    loss_fn(model(x), y).backward()
    assert torch.allclose(grads["weight"], model.weight.grad, atol=1e-6)
    assert torch.allclose(grads["bias"], model.bias.grad, atol=1e-6)


def test_correct_count_only_for_class_targets():
    assert correct_count(torch.tensor([[0.1, 0.9]]), torch.tensor([1])) == 1
    assert correct_count(torch.tensor([[0.1, 0.9]]), torch.tensor([[0.0, 1.0]])) is None
