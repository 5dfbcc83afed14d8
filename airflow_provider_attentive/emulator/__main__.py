"""``python -m airflow_provider_attentive.emulator`` runs the emulator CLI."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
