"""Memory of top-k Lanczos on a ≥10M-parameter model, against the memory of one gradient step.

A GPT-2 built from a config (10.8M parameters; no download), one batch of token sequences. Each
measurement runs in a fresh process, so that the allocator's caches of one do not flatter the next:

* ``gradient step``: forward + backward of the batch (the memory any training step needs);
* ``one Hessian-vector product``: the operator's own peak (the gradient graph differentiated again);
* ``top-k Lanczos``: ``lanczos(k=20)`` on the model's own loss, with the basis on the CPU, float64 and
  float32 Krylov state (the basis is preallocated; only the columns written, one per product, are resident);
* the same product and top-k with ``max_batch_size=4`` and ``2``: every product on the batch's halves
  (quarters) in turn, summed — the same operator, with the peak of a smaller batch;
* the same two for the Gauss–Newton matrix (``kind="ggn"``, on the causal-LM cross-entropy, which it needs
  as a function of the logits): one product by each backend — ``"jvp"``, the default, which never
  differentiates the model twice, and ``"autograd"`` —, and its top-k with a float32 basis on the CPU.

On the CPU the figure is the process's peak resident set above the model's (``landscape.memory``); the
basis itself lives in that memory, so the table also shows the operator's share — the peak minus the
basis's exact size —, which is what stays on an accelerator with ``basis_device="cpu"``. With
``--device cuda`` the figure is ``torch.cuda.max_memory_allocated`` and the basis stays in host memory.

    python benchmarks/curvature_memory.py            # GPT-2 of 10.8M parameters, k = 20, 40 Lanczos steps
    python benchmarks/curvature_memory.py --quick    # fewer Lanczos steps (memory is preallocated anyway)
    python benchmarks/curvature_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

import torch


def gpt2(layers: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=8000, n_positions=128, n_embd=256, n_layer=layers, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def batch(device: str, n: int = 8, length: int = 64) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 8000, (n, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids.to(device), "labels": ids.to(device)}


def _measure(task: str, device: str, layers: int, k: int, max_iter: int, krylov: str, queue: mp.Queue,
             kind: str = "hessian", backend: str | None = None, max_batch_size: int | None = None) -> None:
    from landscape.memory import peak_memory, resident_peak_mb

    torch.set_num_threads(2)
    model = gpt2(layers).to(device)
    data = [batch(device)]
    n = sum(p.numel() for p in model.parameters())
    with peak_memory("cpu") as base:
        pass  # the model and data in place: the baseline
    base_mb = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else base.mb
    basis_mb = 0.0
    with peak_memory(device) as peak:
        if task == "gradient":
            loss = model(**data[0]).loss
            loss.backward()
        elif task == "hvp":
            from landscape.curvature import CurvatureOperator

            with CurvatureOperator(model, _loss(kind), data, kind=kind, backend=backend,
                                   max_batch_size=max_batch_size) as op:
                op.matvec(torch.randn(op.size, generator=torch.Generator().manual_seed(0)))
        else:
            from landscape.curvature import lanczos
            from landscape.distributed import curvature_operator

            dtype = torch.float32 if krylov == "float32" else torch.float64
            max_basis = max(3 * k + 30, 50)  # lanczos's default basis for k
            with curvature_operator(model, _loss(kind), data, kind=kind, backend=backend,
                                    max_batch_size=max_batch_size) as op:
                found = lanczos(op, k, tol=1e-3, max_iter=max_iter, krylov_dtype=dtype, basis_device="cpu",
                                max_basis=max_basis)
            # the basis is preallocated but only the columns written are resident: one per product, plus one
            columns = min(max_basis, found.n_matvec + 1)
            basis_mb = columns * n * (4 if dtype == torch.float32 else 8) / 2**20
    queue.put({"n": n, "peak": peak.mb, "base": base_mb, "basis": basis_mb, "rss": resident_peak_mb()})


def _loss(kind: str) -> object:
    """The model's own loss for the Hessian; the same cross-entropy as a function of the logits for the GGN."""
    from landscape.losses import causal_lm_cross_entropy

    return causal_lm_cross_entropy() if kind == "ggn" else "model"


def run(task: str, device: str, layers: int, k: int, max_iter: int, krylov: str = "float64",
        kind: str = "hessian", backend: str | None = None, max_batch_size: int | None = None) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(task, device, layers, k, max_iter, krylov, queue, kind,
                                                     backend, max_batch_size))
    process.start()
    out = queue.get(timeout=3600)
    process.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 Lanczos steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=11, help="GPT-2 blocks (11: 10.8M parameters)")
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()
    steps = 8 if args.quick else 40
    step = run("gradient", args.device, args.layers, args.k, steps)
    where = "GPU allocated" if args.device == "cuda" else "CPU resident set"
    print(f"GPT-2, {step['n'] / 1e6:.1f}M parameters, 8×64 tokens; peak {where} above the model's, MiB")
    print(f"{'measurement':<34} {'peak':>8} {'basis':>8} {'operator':>9} {'× grad step':>12}")
    grad = step["peak"] - step["base"]
    print(f"{'gradient step':<34} {grad:>8.0f} {'':>8} {grad:>9.0f} {1.0:>12.2f}")
    hvp = run("hvp", args.device, args.layers, args.k, steps)
    one = hvp["peak"] - hvp["base"]
    print(f"{'one Hessian-vector product':<34} {one:>8.0f} {'':>8} {one:>9.0f} {one / grad:>12.2f}")
    def lanczos_row(label: str, krylov: str, kind: str = "hessian", max_batch_size: int | None = None) -> None:
        got = run("lanczos", args.device, args.layers, args.k, steps, krylov, kind, max_batch_size=max_batch_size)
        total = got["peak"] - got["base"]
        # on the CPU the basis is part of the peak; on CUDA it is in host memory, outside the figure
        operator = total - got["basis"] if args.device != "cuda" else total
        print(f"{label:<34} {total:>8.0f} {got['basis']:>8.0f} {operator:>9.0f} "
              f"{total / grad:>6.2f} ({operator / grad:.2f} operator)")

    for krylov in ("float64", "float32"):
        lanczos_row(f"top-{args.k} Lanczos, {krylov} basis on CPU", krylov)
    for parts in (4, 2):
        got = run("hvp", args.device, args.layers, args.k, steps, max_batch_size=parts)
        one = got["peak"] - got["base"]
        print(f"{f'one product, max_batch_size={parts}':<34} {one:>8.0f} {'':>8} {one:>9.0f} {one / grad:>12.2f}")
        lanczos_row(f"top-{args.k}, float64, max_batch_size={parts}", "float64", max_batch_size=parts)
    for backend in ("jvp", "autograd"):
        got = run("hvp", args.device, args.layers, args.k, steps, kind="ggn", backend=backend)
        one = got["peak"] - got["base"]
        print(f"{'one GGN product, ' + backend:<34} {one:>8.0f} {'':>8} {one:>9.0f} {one / grad:>12.2f}")
    lanczos_row(f"GGN top-{args.k}, float32 basis on CPU", "float32", "ggn")


if __name__ == "__main__":
    main()
