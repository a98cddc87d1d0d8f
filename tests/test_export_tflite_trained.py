"""The parity gates on a trained backbone for the TFLite device variants (issue 14)."""

import numpy as np
import pytest

from keras_facemargin.export import to_tflite

from export_helpers import trained_digit_mobilefacenet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.slow
def test_device_variants_of_a_trained_mobilefacenet_meet_the_gates(tmp_path):
    """Paper-width MobileFaceNet (112x112x3 -> 512) trained as in
    test_int8_trained_mobilefacenet_reaches_0_99_on_held_out_images (30 steps of 32, ArcFace,
    digits upscaled to 112x112, identities 0-6), calibrated on 64 training images, verified on
    64 disjoint held-out images (half of unseen identities): int8 with uint8 input/output and a
    fixed batch of 1 (Edge TPU), int8 with int8 input/output, and float32 at batch 1 meet the
    gates (int8 >= 0.99, float32 >= 0.99999)."""
    from ai_edge_litert.interpreter import Interpreter

    model, images, calib, held = trained_digit_mobilefacenet()
    for name, kwargs, threshold in [
            ("edgetpu", {"quantization": "int8", "io_dtype": "uint8", "batch_size": 1}, 0.99),
            ("int8_io", {"quantization": "int8", "io_dtype": "int8"}, 0.99),
            ("float32_b1", {"batch_size": 1}, 0.99999)]:
        extra = {"representative_data": images[calib]} if "quantization" in kwargs else {}
        report = to_tflite(model, tmp_path / f"{name}.tflite", verification_data=images[held],
                           force=True, **kwargs, **extra)
        assert report.samples == 64 and report.min_cosine >= threshold, (name, report)
        inp = Interpreter(model_path=report.path).get_input_details()[0]
        if kwargs.get("batch_size") == 1:
            assert list(inp["shape_signature"]) == [1, 112, 112, 3]
        if "io_dtype" in kwargs:
            assert inp["dtype"] == np.dtype(kwargs["io_dtype"]) and inp["quantization"][0] == 1.0
