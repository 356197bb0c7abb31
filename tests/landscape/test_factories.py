import pytest
import torch
from torch import nn

from landscape import factories
from landscape.factories import FactoryError, read_config, resolve


def test_resolve_module_and_file_targets(tmp_path):
    assert resolve("torch.nn:Linear") is nn.Linear
    assert resolve("torch:nn.functional.relu") is torch.nn.functional.relu
    (tmp_path / "user_models.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    build = factories.model_factory(f"{tmp_path / 'user_models.py'}:make")
    assert isinstance(build(), nn.Linear)


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("no_colon", "must look like"),
        ("nonexistent_pkg_xyz.models:make", "module 'nonexistent_pkg_xyz' not found"),
        ("torch.nn:NoSuchThing", "has no attribute 'NoSuchThing'"),
        ("missing_file.py:make", "does not exist"),
    ],
)
def test_bad_targets_name_the_string(target, fragment):
    with pytest.raises(FactoryError) as info:
        factories.model_factory(target)
    assert target in str(info.value) and fragment in str(info.value)


def test_not_callable_and_not_a_module():
    with pytest.raises(FactoryError, match="not callable"):
        factories.model_factory("math:pi")
    build = factories.model_factory("builtins:dict")
    with pytest.raises(FactoryError, match="not a torch.nn.Module"):
        build()


def test_data_factory_shapes(tmp_path):
    (tmp_path / "d.py").write_text(
        "import torch\n"
        "def pair():\n    return torch.zeros(3, 2), torch.zeros(3)\n"
        "def split():\n    return (torch.zeros(3, 2), torch.zeros(3)), (torch.ones(2, 2), torch.ones(2))\n"
        "def named():\n    return {'train': (torch.zeros(1, 1), torch.zeros(1))}\n"
        "def nothing():\n    return None\n"
    )
    train, test = factories.data_factory(f"{tmp_path}/d.py:pair")
    assert test is None and train[0].shape == (3, 2)
    train, test = factories.data_factory(f"{tmp_path}/d.py:split")
    assert test[0].shape == (2, 2)
    assert factories.data_factory(f"{tmp_path}/d.py:named")[1] is None
    with pytest.raises(FactoryError, match="returned None"):
        factories.data_factory(f"{tmp_path}/d.py:nothing")


def test_loss_resolution():
    assert isinstance(factories.loss_function("torch.nn:CrossEntropyLoss"), nn.CrossEntropyLoss)
    assert isinstance(factories.loss_function("mse"), nn.MSELoss)
    assert factories.loss_function("torch.nn.functional:cross_entropy") is torch.nn.functional.cross_entropy
    smoothed = factories.loss_function("torch.nn:CrossEntropyLoss", {"label_smoothing": 0.1})
    assert smoothed.label_smoothing == 0.1


def test_read_config(tmp_path):
    (tmp_path / "run.toml").write_text(
        '[run]\nname = "r1"\nstore = "out/s.sqlite"\ncheckpoints = "ck"\nmax_samples = 100\nlr = 0.1\n'
        '[model]\nfactory = "torch.nn:Linear"\nkwargs = { in_features = 2, out_features = 2 }\n'
        '[data]\nfactory = "d:f"\n[loss]\nfactory = "mse"\n[probes.hessian]\nk = 3\n[probes.metrics]\n'
    )
    config = read_config(tmp_path / "run.toml")
    assert config.run == "r1" and config.max_samples == 100 and config.lr == 0.1
    assert config.store == str(tmp_path / "out/s.sqlite") and config.checkpoints == str(tmp_path / "ck")
    assert config.probes == {"hessian": {"k": 3}, "metrics": {}}
    assert config.model_kwargs == {"in_features": 2, "out_features": 2}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[run\n", "not valid TOML"),
        ('[data]\nfactory = "a:b"\n', "[model] needs a 'factory"),
        ('[model]\nfactory = "a:b"\n[data]\nfactory = "a:b"\n[run]\nbogus = 1\n', "unknown [run] key"),
    ],
)
def test_bad_config(tmp_path, text, fragment):
    (tmp_path / "run.toml").write_text(text)
    with pytest.raises(FactoryError) as info:
        read_config(tmp_path / "run.toml")
    assert fragment in str(info.value) and "run.toml" in str(info.value)
    with pytest.raises(FactoryError, match="does not exist"):
        read_config(tmp_path / "nope.toml")


def test_hf_model_from_a_local_config_folder(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from tests.real_models import tiny_bert

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = tiny_bert()
    model.save_pretrained(tmp_path / "out" / "checkpoint-3")
    build = factories.model_factory(f"hf:{tmp_path / 'out'}")  # the output folder: its checkpoint's config
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    fresh = build()
    assert type(fresh).__name__ == "BertForSequenceClassification" and not fresh.training
    assert set(fresh.state_dict()) == set(model.state_dict())
    with pytest.raises(factories.FactoryError, match="holds no config.json"):
        factories.model_factory(f"hf:{tmp_path / 'nothing'}")


def test_loss_shorthands_for_real_models():
    from landscape.losses import TokenCrossEntropy

    assert factories.loss_function("model") == "model"
    causal = factories.loss_function("causal_lm")
    assert isinstance(causal, TokenCrossEntropy) and causal.shift
    assert not factories.loss_function("token_cross_entropy").shift
    with pytest.raises(factories.FactoryError, match="takes no kwargs"):
        factories.loss_function("model", {"a": 1})
