"""Where ``../shared/reference`` is: recorded venue data the tests may replay as an extra.

Those files stay there (the project never copies them); the tests' own payloads are written
by the project (the fakes and the tests' fixtures). Tests that replay the reference skip
cleanly where it is absent (a fresh clone, a worktree); ``SARAS_TEST_REFERENCE_DIR`` points
elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(
    os.environ.get("SARAS_TEST_REFERENCE_DIR", REPO.parent / "shared" / "reference")
).resolve()
