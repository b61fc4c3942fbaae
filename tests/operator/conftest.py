"""Fixtures of the operator tests: the emulated API server (kmock, over HTTP), the Job runner,
a model registry with a small trained model in moto S3, and the real operator (Kopf) in a thread.

``tests/`` is put on ``sys.path`` so ``harness`` (shared test helpers) imports as a package.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
