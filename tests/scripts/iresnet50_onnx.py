"""IResNet-50 through to_onnx (insightface convention), in its own process: the conversion peaks
at about 8 GB (64x64 input) to 11.5 GB (112x112), which must not add to a test worker's memory.

Prints the min cosine between insightface's get_feat (re-derived in NumPy) and Keras.
"""
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from test_export_onnx_clients import _backbone_parity  # noqa: E402

from keras_facemargin.backbones import iresnet50  # noqa: E402

size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
with tempfile.TemporaryDirectory() as folder:
    # BN scales of 0.1-0.5 keep the 24 residual blocks finite (0.5-1.5: |y| ~ 1e29)
    print(_backbone_parity(iresnet50(input_shape=(size, size, 3), embedding_size=128),
                           pathlib.Path(folder), gamma=(0.1, 0.5)))
