"""The metrics and the readers are NumPy / pure Python: they import without TensorFlow or Keras."""

import subprocess
import sys

CODE = """
import sys
sys.modules["tensorflow"] = None  # any import of it now raises ImportError
sys.modules["keras"] = None
import numpy as np
from keras_facemargin.evaluation import evaluate_pairs, identification, angle_statistics
from keras_facemargin.data import load_bin, RecordIOReader, write_recordio
e = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.0], [0.0, 1.0]] * 10)
print(evaluate_pairs(e, [True, False] * 10).accuracy)
"""


def test_metrics_and_readers_import_without_tensorflow():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "1.0"
