import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
ORACLE = SHARED / "oracle" / "reference.npz"


@pytest.fixture(scope="session")
def oracle():
    import numpy as np

    if not ORACLE.exists():
        pytest.fail(f"peer reference file missing: {ORACLE} (shared/ must sit beside the repo)")
    return np.load(ORACLE)
