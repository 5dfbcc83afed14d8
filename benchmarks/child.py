"""A benchmark's sync in a fresh process, so that its peak RSS and CPU are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["run_child"]


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m <module> --child <args>`` and return the JSON object its last line of output holds."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"the sync exited with {out.returncode}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
