"""Resolve ``"package.module:attr"`` strings into a model factory, a data factory and a loss; read run configs.

A target is ``module.path:attribute`` (dots after the colon walk attributes) or ``path/to/file.py:attribute``;
a model target may also be ``hf:DIR``: a Hugging Face model built from the ``config.json`` of a local
folder (a ``checkpoint-N`` folder, or a Trainer's output folder holding them), by the class its
``config.architectures`` names, with fresh weights (the checkpoints supply them); nothing is downloaded.
The loss ``"model"`` is the model's own loss (``outputs.loss``; the labels are passed to the model).
A run config is a TOML file::

    [run]
    name = "digits-mlp"            # run name in the store
    store = "runs/digits.sqlite"
    checkpoints = "checkpoints/"   # folder (or one file)
    device = "cpu"                 # or "cuda", "auto"
    max_samples = 1000             # fixed, seeded subset of the data
    lr = 0.1                       # optional: enables the stability ratios

    [model]
    factory = "mypkg.models:make_mlp"
    kwargs = { hidden = 64 }

    [data]
    factory = "mypkg.data:load"    # returns train, or (train, test), or {"train": ..., "test": ...}

    [loss]
    factory = "torch.nn:CrossEntropyLoss"   # a class is instantiated; a function is used as the loss

    [probes.hessian]                # one table per probe, holding its params; no table = every probe
    k = 5
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import torch
from torch import nn

LOSS_SHORTHANDS = {
    "causal_lm": "landscape.losses:TokenCrossEntropy",
    "token_cross_entropy": "landscape.losses:TokenCrossEntropy",
    "cross_entropy": "torch.nn:CrossEntropyLoss",
    "ce": "torch.nn:CrossEntropyLoss",
    "mse": "torch.nn:MSELoss",
    "nll": "torch.nn:NLLLoss",
    "bce_with_logits": "torch.nn:BCEWithLogitsLoss",
}


class FactoryError(ValueError):
    """A target string or config entry cannot be resolved into what is needed."""


def _load_file_module(path: Path, target: str) -> Any:
    if not path.is_file():
        raise FactoryError(f"cannot resolve {target!r}: file {path} does not exist.")
    name = f"_landscape_user_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FactoryError(f"cannot resolve {target!r}: {path} is not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise FactoryError(f"cannot resolve {target!r}: importing {path} failed ({type(error).__name__}: {error}).") from None
    return module


def resolve(target: str, *, what: str = "target") -> Any:
    """The object named by ``"package.module:attr"`` or ``"file.py:attr"``; errors name the string."""
    if not isinstance(target, str) or ":" not in target:
        raise FactoryError(f"{what} {target!r} must look like 'package.module:attribute' or 'file.py:attribute'.")
    module_name, _, attr_path = target.rpartition(":")
    if not module_name or not attr_path:
        raise FactoryError(f"{what} {target!r} must look like 'package.module:attribute' or 'file.py:attribute'.")
    if module_name.endswith(".py") or "/" in module_name:
        module = _load_file_module(Path(module_name), target)
    else:
        cwd = str(Path.cwd())
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise FactoryError(f"{what} {target!r}: module {error.name!r} not found.") from None
        except Exception as error:
            raise FactoryError(
                f"{what} {target!r}: importing {module_name} failed ({type(error).__name__}: {error})."
            ) from None
    obj = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"{what} {target!r}: module {module_name} has no attribute {attr_path!r}.")
        obj = getattr(obj, part)
    return obj


def _callable(target: str, what: str) -> Callable[..., Any]:
    obj = resolve(target, what=what)
    if not callable(obj):
        raise FactoryError(f"{what} {target!r} resolves to a {type(obj).__name__}, which is not callable.")
    return obj


def _config_folder(folder: Path, target: str) -> Path:
    """The folder whose ``config.json`` describes the model: ``folder`` itself or its first checkpoint."""
    if (folder / "config.json").is_file():
        return folder
    if folder.is_dir():
        from landscape.checkpoint_dirs import step_of_folder

        candidates = [p.parent for p in folder.rglob("config.json")]
        if candidates:
            return min(candidates, key=lambda p: (step_of_folder(p) is None, step_of_folder(p) or 0, str(p)))
    raise FactoryError(f"model {target!r}: {folder} holds no config.json; point hf: at a folder written by "
                       "save_pretrained (a checkpoint-N folder or the Trainer's output_dir).")


def hf_model_factory(folder: str | Path, kwargs: Mapping[str, Any] | None = None) -> Callable[[], nn.Module]:
    """Build a Hugging Face model from a local folder's ``config.json`` (class from ``config.architectures``).

    Runs with ``HF_HUB_OFFLINE=1``: the config is read from the folder, never fetched. ``kwargs`` go to
    ``_from_config`` (e.g. ``attn_implementation``).
    """
    target = f"hf:{folder}"
    where = _config_folder(Path(folder), target)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        raise FactoryError(f"model {target!r} needs Hugging Face transformers: pip install landscape[hf].") from None
    try:
        config = transformers.AutoConfig.from_pretrained(str(where), local_files_only=True)
    except Exception as error:  # transformers raises many types for a bad config; one sentence each
        raise FactoryError(f"model {target!r}: {where / 'config.json'} cannot be read ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}).") from None
    names = list(getattr(config, "architectures", None) or [])
    cls = getattr(transformers, names[0], None) if names else None
    if cls is None:
        raise FactoryError(f"model {target!r}: {where / 'config.json'} names no model class transformers knows "
                           f"(architectures: {names}); pass --model module:function instead.")
    extra = dict(kwargs or {})

    def build() -> nn.Module:
        return cls._from_config(config, **extra).eval()

    return build


def model_factory(target: str, kwargs: Mapping[str, Any] | None = None) -> Callable[[], nn.Module]:
    """A zero-argument callable building a fresh model from ``target`` (a function or an nn.Module class,
    or ``hf:DIR`` for a Hugging Face model described by a local ``config.json``)."""
    if isinstance(target, str) and target.startswith("hf:"):
        return hf_model_factory(target[3:], kwargs)
    factory = _callable(target, "model factory")
    kwargs = dict(kwargs or {})

    def build() -> nn.Module:
        model = _call(factory, kwargs, f"model factory {target!r}")
        if not isinstance(model, nn.Module):
            raise FactoryError(f"model factory {target!r} returned a {type(model).__name__}, not a torch.nn.Module.")
        return model

    return build


def _call(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> Any:
    """``factory(**kwargs)``; an exception it raises becomes one sentence naming the factory."""
    try:
        return factory(**kwargs)
    except FactoryError:
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        raise FactoryError(f"{what} raised {type(error).__name__}: {detail}"
                           f"{' (called with ' + repr(dict(kwargs)) + ')' if kwargs else ''}.") from None


def _is_pair(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(
        isinstance(v, (torch.Tensor, np.ndarray)) for v in value
    )


def split_train_test(value: object, target: str = "data factory") -> tuple[object, object | None]:
    """Interpret a data factory's return value as ``(train, test_or_None)``."""
    if value is None:
        raise FactoryError(f"{target} returned None; it must return train data, (train, test) or a dict with 'train'.")
    if isinstance(value, Mapping):
        if "train" not in value:
            raise FactoryError(f"{target} returned a dict without a 'train' key (keys: {sorted(value)}).")
        return value["train"], value.get("test")
    if _is_pair(value):
        return value, None
    if isinstance(value, tuple) and len(value) == 2:
        return value[0], value[1]
    return value, None


def data_factory(target: str, kwargs: Mapping[str, Any] | None = None) -> tuple[object, object | None]:
    """Call the data factory and return ``(train, test_or_None)``."""
    factory = _callable(target, "data factory")
    return split_train_test(_call(factory, dict(kwargs or {}), f"data factory {target!r}"), f"data factory {target!r}")


def _takes_two_arguments(function: Callable[..., Any]) -> bool:
    """Whether ``function(outputs, targets)`` binds (True when the signature cannot be read)."""
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def _binds_no_arguments(function: Callable[..., Any]) -> bool:
    try:
        inspect.signature(function).bind()
    except (TypeError, ValueError):
        return False
    return True


def loss_function(target: str, kwargs: Mapping[str, Any] | None = None) -> Callable[..., torch.Tensor] | str:
    """A loss ``fn(outputs, targets) -> mean scalar`` from a shorthand, a class (instantiated with ``kwargs``),
    a loss function, or a factory function returning a loss (called with ``kwargs``: a function that
    takes no ``(outputs, targets)`` pair but can be called without arguments is such a factory);
    ``"model"`` (the model's own loss) is returned as is."""
    if target == "model":
        if kwargs:
            raise FactoryError(f"loss 'model' takes no kwargs, got {dict(kwargs)}.")
        return "model"
    kwargs = dict(kwargs or {})
    if target == "causal_lm":
        kwargs.setdefault("shift", True)
    target = LOSS_SHORTHANDS.get(target, target)
    obj = _callable(target, "loss")
    if inspect.isclass(obj):
        try:
            return obj(**kwargs)
        except TypeError as error:
            raise FactoryError(f"loss {target!r} cannot be built with {kwargs}: {error}.") from None
        except Exception as error:
            raise FactoryError(f"loss {target!r} raised {type(error).__name__} when built: {error}.") from None
    if kwargs or (not _takes_two_arguments(obj) and _binds_no_arguments(obj)):
        made = _call(obj, kwargs, f"loss factory {target!r}")
        if not callable(made):
            raise FactoryError(f"loss factory {target!r} returned a {type(made).__name__}, not a loss function.")
        return made
    if not _takes_two_arguments(obj):
        raise FactoryError(f"loss {target!r} can be called neither as loss(outputs, targets) nor as a factory "
                           "without arguments; give a loss class, a loss function or a factory returning one.")
    return obj


@dataclass
class RunConfig:
    """Everything ``landscape analyze`` needs, from a TOML file or command-line flags."""

    model: str
    data: str
    loss: str = "torch.nn:CrossEntropyLoss"
    checkpoints: str = "checkpoints"
    store: str = "runs/landscape.sqlite"
    run: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    max_samples: int | None = None
    batch_size: int | None = None
    seed: int = 0
    lr: float | None = None
    unsafe_pickle: bool = False
    targets_key: str | None = None
    logits_key: str | None = None
    preset: str | None = None
    param_groups: list[str] | None = None


def _table(config: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = config.get(key, {})
    if isinstance(value, str):
        return {"factory": value}
    if not isinstance(value, Mapping):
        raise FactoryError(f"config {path}: [{key}] must be a table or a 'module:attr' string.")
    return dict(value)


def read_config(path: Path | str) -> RunConfig:
    """Parse a TOML run config; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FactoryError(f"config file {path} does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise FactoryError(f"config file {path} is not valid TOML ({error}).") from None
    base = path.parent
    run = dict(raw.get("run", {}))
    model, data, loss = (_table(raw, k, path) for k in ("model", "data", "loss"))
    for key, table in (("model", model), ("data", data)):
        if "factory" not in table:
            raise FactoryError(f"config {path}: [{key}] needs a 'factory = \"module:attr\"' entry.")
    probes = raw.get("probes", {})
    if not isinstance(probes, Mapping) or not all(isinstance(v, Mapping) for v in probes.values()):
        raise FactoryError(f"config {path}: [probes.NAME] tables must hold each probe's params.")
    known = set(RunConfig.__dataclass_fields__)
    unknown = sorted(set(run) - known - {"name"})
    if unknown:
        raise FactoryError(f"config {path}: unknown [run] key(s) {unknown}.")

    def rel(value: str) -> str:
        candidate = Path(value)
        return str(candidate if candidate.is_absolute() else (base / candidate))

    return RunConfig(
        model=model["factory"], model_kwargs=dict(model.get("kwargs", {})),
        data=data["factory"], data_kwargs=dict(data.get("kwargs", {})),
        loss=loss.get("factory", "torch.nn:CrossEntropyLoss"), loss_kwargs=dict(loss.get("kwargs", {})),
        checkpoints=rel(run.get("checkpoints", "checkpoints")),
        store=rel(run.get("store", "runs/landscape.sqlite")),
        run=run.get("name", run.get("run")),
        probes={k: dict(v) for k, v in probes.items()},
        device=run.get("device", "auto"),
        max_samples=run.get("max_samples"),
        batch_size=run.get("batch_size"),
        seed=int(run.get("seed", 0)),
        lr=run.get("lr"),
        unsafe_pickle=bool(run.get("unsafe_pickle", False)),
        targets_key=run.get("targets_key"),
        logits_key=run.get("logits_key"),
        preset=run.get("preset"),
        param_groups=run.get("param_groups"),
    )
