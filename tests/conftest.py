import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pathlib  # noqa: E402

import pytest  # noqa: E402

# Peer reference values (pytorch-metric-learning, insightface); see tests/data/README.md.
ORACLE = pathlib.Path(__file__).resolve().parent / "data" / "peer_reference.npz"


@pytest.fixture(scope="session")
def oracle():
    import numpy as np

    if not ORACLE.exists():
        pytest.fail(f"peer reference file missing from the repository: {ORACLE}")
    return np.load(ORACLE)
