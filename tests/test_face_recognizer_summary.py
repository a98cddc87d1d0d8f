"""FaceRecognizer.summary() (Keras passes the head `input_shape=` by keyword)."""

import keras

import keras_facemargin as kfm


def test_summary_lists_backbone_and_head():
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model = kfm.FaceRecognizer(backbone, kfm.ArcMarginLayer(7))
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert "arc_margin_layer" in text and "(None, 7)" in text
    # 4 * 7 centres + Dense(6 -> 4) with bias
    assert "Total params: 56" in text
