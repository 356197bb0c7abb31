"""``python -m landscape``: the ``landscape`` command, joining ``torchrun``'s process group first.

``torchrun --nproc-per-node N -m landscape analyze ...`` starts N ranks that share the analysis
(:mod:`landscape.distributed`); without ``torchrun`` this is the plain command.
"""

from __future__ import annotations

import sys


def main() -> int:
    from landscape.cli import main as cli_main
    from landscape.distributed import init_from_env

    joined = init_from_env()
    try:
        return cli_main()
    finally:
        if joined:
            import torch.distributed as dist

            if dist.is_initialized():
                try:
                    dist.barrier()  # no rank tears the group down while another still has a message in flight
                except Exception:  # noqa: BLE001 - a peer already gone: nothing left to wait for
                    pass
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
