"""Fit every head for one step with the given jit_compile; XLA dumps go where TF_XLA_FLAGS says.

Usage: xla_fit_heads.py on|off   (prints the head names it trained, one per line)
"""

import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_facemargin as kf  # noqa: E402

HEADS = ["ArcMarginLayer", "CosMarginLayer", "SphereMarginLayer", "CombinedMarginLayer",
         "NormSoftmaxLayer", "LargeMarginSoftmaxLayer", "SubCenterArcMarginLayer",
         "CurricularMarginLayer", "AdaMarginLayer", "MagMarginLayer", "ElasticMarginLayer",
         "SoftmaxLayer"]
jit = sys.argv[1] == "on"
x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
y = np.arange(16) % 4
for name in HEADS:
    head = getattr(kf, name)(4, name=f"head_{name}")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), head],
                             name=f"model_{name}")
    model.compile("sgd", loss=head.loss, jit_compile=jit)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    print(name, flush=True)
