"""Running the `landscape` command of this source tree in a subprocess.

The subprocess gets this tree first on ``PYTHONPATH``, so it runs the code under test even where another
checkout of the package is installed (an editable install resolves ``landscape`` to that checkout from
any other working directory).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tree_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that must import this tree's packages."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
            **extra}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "landscape.cli", *args]


def landscape(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``landscape ARGS`` (optionally under ``prefix``, e.g. a namespace wrapper) and capture its output."""
    return subprocess.run([*prefix, *cli_command(*args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or tree_env())
