"""What a result was computed from, and the hash that makes it a result's identity.

A stored result may be reused only while everything it was computed from is unchanged, so its identity
(``config_hash``, beside run, step and probe) hashes:

* the probe's name, its params and its code ``version`` (a probe attribute, default 1, raised when a
  change to the probe changes its numbers);
* the data: a SHA-256 over the bytes, dtype and shape of every input and target tensor of the fixed
  sample set (after subsetting and batching), train and test, computed once per run;
* the loss and the model factory, each described by its target string and kwargs (the command line), or
  by the object's import path, its code and its simple settings (the Python API).

The checkpoint file's SHA-256 is stored beside each result and compared as well (a rewritten checkpoint
replaces its results). ``inputs`` — the dict of all of these — is stored with every result, so
``landscape ls`` can say what a result was computed from and the runner can say why it measures again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from landscape.store import canonical_json, config_hash, hashed_params

if TYPE_CHECKING:  # torch loads only where tensors are hashed, so `landscape ls` stays light
    import torch

    from landscape.data import Batches

#: Keys of ``inputs`` that enter the identity hash (the others are shown, not hashed).
HASHED_INPUTS = ("data", "loss", "model")
#: Human names of the inputs, for messages.
INPUT_NAMES = {"data": "data", "loss": "loss", "model": "model factory", "probe_version": "probe version",
               "checkpoint": "checkpoint file"}


def tensor_digest(digest: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes (on the CPU, contiguous) into ``digest``."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{flat.dtype}|{tuple(tensor.shape)}|".encode())
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().tobytes())


def data_fingerprint(train: Batches, test: Batches | None) -> str:
    """SHA-256 over every tensor (inputs and targets) of the train and test batches, batch by batch.

    The batch boundaries enter too (each batch is hashed on its own), so re-cut batches count as other
    data: the per-batch means they give can differ in the last bits.
    """
    digest = hashlib.sha256()
    for label, batches in (("train", train), ("test", test)):
        digest.update(f"<{label}:{0 if batches is None else len(batches)}>".encode())
        for batch in batches or ():
            digest.update(f"<{batch.structure}:{batch.signature()}>".encode())
            for tensor in batch.tensors():
                tensor_digest(digest, tensor)
    return digest.hexdigest()


def target_spec(target: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The description of a factory named by a target string (``"pkg.mod:fn"``) and its kwargs."""
    return {"target": str(target), "kwargs": _plain(dict(kwargs or {}))}


def _plain(value: Any) -> Any:
    return json.loads(canonical_json({"v": value}))["v"]


def _code_digest(function: Callable[..., Any]) -> str | None:
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    digest = hashlib.sha256(code.co_code)
    digest.update(repr(code.co_consts).encode())
    digest.update(repr(code.co_names).encode())
    return digest.hexdigest()[:16]


def _path(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def describe(obj: Any) -> dict[str, Any]:
    """A JSON-able description of a loss or model factory object that changes when what it computes does.

    A function: its import path and a hash of its code. A ``functools.partial``: the function's, plus its
    arguments. An ``nn.Module`` (a loss instance): its class and its public simple settings (such as
    ``reduction``, ``ignore_index``, ``label_smoothing``), and a hash of its tensors (class weights). A class:
    its import path. Anything else: its type and ``repr``.
    """
    from torch import nn

    if isinstance(obj, functools.partial):
        return {**describe(obj.func), "args": _plain(list(obj.args)), "kwargs": _plain(dict(obj.keywords))}
    if isinstance(obj, nn.Module):
        settings = {k: v for k, v in sorted(vars(obj).items())
                    if not k.startswith("_") and k != "training" and isinstance(v, (str, int, float, bool, type(None)))}
        out: dict[str, Any] = {"target": _path(type(obj)), "settings": settings}
        tensors = list(obj.state_dict().items())
        if tensors:
            digest = hashlib.sha256()
            for name, tensor in tensors:
                digest.update(name.encode())
                tensor_digest(digest, tensor)
            out["tensors"] = digest.hexdigest()[:16]
        return out
    if inspect.isclass(obj):
        return {"target": _path(obj)}
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        function = obj.__func__ if inspect.ismethod(obj) else obj
        return {"target": _path(function), "code": _code_digest(function)}
    if callable(obj) and hasattr(obj, "__qualname__"):
        return {"target": _path(obj)}
    return {"target": _path(type(obj)), "repr": repr(obj)[:200]}


def run_inputs(*, train: Batches, test: Batches | None, loss: Mapping[str, Any], model: Mapping[str, Any],
               data_source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The inputs shared by every result of a run (the data fingerprint, loss and model descriptions)."""
    inputs: dict[str, Any] = {
        "data": data_fingerprint(train, test),
        "n_train": train.n_samples,
        "n_test": None if test is None else test.n_samples,
        "loss": _plain(dict(loss)),
        "model": _plain(dict(model)),
    }
    if data_source:
        inputs["data_source"] = _plain(dict(data_source))
    return inputs


def probe_version(probe: object) -> int:
    """A probe's code version: its ``version`` attribute, 1 when it has none."""
    value = getattr(probe, "version", 1)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def result_inputs(run_inputs: Mapping[str, Any], probe: object) -> dict[str, Any]:
    """The inputs of one probe's results: the run's plus the probe's code version."""
    return {**run_inputs, "probe_version": probe_version(probe)}


def identity(probe: str, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    """The config hash of a result: probe, params, probe version and the hashed inputs."""
    hashed = {key: inputs.get(key) for key in HASHED_INPUTS}
    return config_hash(probe, {"params": hashed_params(params), "version": inputs.get("probe_version", 1),
                               "inputs": hashed})


def params_identity(probe: str, params: Mapping[str, Any]) -> str:
    """The hash of a probe's name and params alone (what ``--reuse`` matches on)."""
    return config_hash(probe, dict(params))


def changed_inputs(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Names of the inputs that differ between a stored result's and the current ones."""
    if not stored:
        return ["unrecorded inputs (written by an earlier version)"]
    keys = [*HASHED_INPUTS, "probe_version"]
    return [INPUT_NAMES[key] for key in keys if stored.get(key, 1 if key == "probe_version" else None)
            != current.get(key, 1 if key == "probe_version" else None)]


def summary(inputs: Mapping[str, Any] | None) -> str:
    """One line saying what a result was computed from (for ``landscape ls``)."""
    if not inputs:
        return "inputs not recorded"
    parts = []
    if inputs.get("data"):
        counts = f"{inputs.get('n_train')} train" + (f" / {inputs['n_test']} test" if inputs.get("n_test") else "")
        source = inputs.get("data_source", {}).get("target")
        parts.append(f"data {str(inputs['data'])[:12]} ({counts} samples{', ' + source if source else ''})")
    for key in ("loss", "model"):
        spec = inputs.get(key) or {}
        if spec:
            kwargs = spec.get("kwargs") or spec.get("settings")
            parts.append(f"{INPUT_NAMES[key]} {spec.get('target')}" + (f" {canonical_json(kwargs)}" if kwargs else ""))
    parts.append(f"probe v{inputs.get('probe_version', 1)}")
    return "; ".join(parts)
