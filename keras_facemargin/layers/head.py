"""``MarginHead``: the one layer behind every margin head of the package."""

from __future__ import annotations

import inspect
from typing import Any

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_finite, check_int, prepare_labels
from keras_facemargin.margins.base import CONTEXT_ATTR, Margin, margin_parameters
from keras_facemargin.ops.cosine import cosine_logits


@register
class MarginHead(keras.layers.Layer):
    """Cosine classifier with a margin on the target logit: the core of every head.

    Holds the class centres (one weight, ``kernel``, shape (embedding_dim, num_classes * K))
    and delegates the target transform to a :class:`~keras_facemargin.margins.Margin`.

    Formula:
        cos[b, j] = max_k <x_b, W_{j,k}> / (||x_b|| ||W_{j,k}||)
        logits    = margin.logits(cos, y)  (e.g. s * (cos + onehot(y) (cos(theta_y + m) - cos_y)))

    Args:
        num_classes: number of identities C, >= 1.
        margin: a :class:`~keras_facemargin.margins.Margin` instance (named heads such as
            :class:`ArcMarginLayer` build it from their keyword arguments instead).
        sub_centers: K sub-centres per class; the cosine is the max over them. Defaults to `1`.
        kernel_initializer: initializer of the class centres. Defaults to `"glorot_normal"`.
        kernel_regularizer: optional regularizer of the class centres. Defaults to `None`.
        check_inputs: validate labels (range, integrality) and embeddings (finite) at run time.
            Defaults to `True`.
        displacement_basis: add DiscFace's learnable displacement basis ``xi`` (a trainable
            weight of shape (embedding_dim,)) for :class:`~keras_facemargin.DiscrepancyLoss`.
            Defaults to `False`.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``...). The head
            computes in float32 unless ``dtype`` is given, also under mixed precision.

    Call arguments:
        inputs: embeddings, shape (B, embedding_dim).
        labels: optional integer class ids, shape (B,) or (B, 1).
        training: Python bool.

    Returns:
        Without labels: the cosine similarity (B, C) to every class centre, no margin (for
        ``model.predict`` and closed-set argmax); the head's context rides along on the tensor
        so that ``head.loss`` can apply the margin in ``model.fit``. With labels: the scaled,
        margin-adjusted logits (B, C) for
        ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.

    Example:

    >>> import keras, numpy as np
    >>> from keras_facemargin import ArcMarginLayer
    >>> head = ArcMarginLayer(num_classes=10, margin=0.5, scale=64.0)
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16), head])
    >>> model.compile(optimizer="sgd", loss=head.loss, metrics=["accuracy"])
    >>> _ = model.fit(np.random.rand(20, 32), np.arange(20) % 10, verbose=0)
    >>> model.predict(np.random.rand(2, 32), verbose=0).shape
    (2, 10)
    """

    #: the margin class of a named head (None for the generic ``MarginHead``).
    margin_class: type[Margin] | None = None
    #: the loss class returned by ``head.loss`` for a named head.
    loss_class: type | None = None
    default_sub_centers: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.margin_class is None:
            return
        base = list(inspect.signature(MarginHead.__init__).parameters.values())
        params = [base[0], base[1]]  # self, num_classes
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                   for p in margin_parameters(cls.margin_class)]
        params += [p.replace(default=cls.default_sub_centers) if p.name == "sub_centers" else p
                   for p in base[3:]]
        cls.__signature__ = inspect.Signature(params)

    def __init__(self, num_classes: int, margin: Margin | dict | None = None, *,
                 sub_centers: int | None = None, kernel_initializer="glorot_normal",
                 kernel_regularizer=None, check_inputs: bool = True,
                 displacement_basis: bool = False, **kwargs):
        if self.margin_class is not None:
            names = {p.name for p in margin_parameters(self.margin_class)}
            margin_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            if margin is not None:
                if "margin" not in names:
                    raise ValueError(
                        f"{type(self).__name__} takes no `margin` argument; its arguments are "
                        f"{sorted(names)}. Received: margin={margin!r}"
                    )
                margin_kwargs["margin"] = margin
            margin = self.margin_class(**margin_kwargs)
        elif isinstance(margin, dict):
            margin = keras.saving.deserialize_keras_object(margin)
        if not isinstance(margin, Margin):
            raise ValueError(
                "`margin` must be a keras_facemargin.margins.Margin instance (or use a named head "
                f"such as ArcMarginLayer). Received: margin={margin!r}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.sub_centers = check_int(
            "sub_centers", self.default_sub_centers if sub_centers is None else sub_centers, low=1
        )
        if self.sub_centers > 1 and "kernel_norm" in margin.requires:
            raise ValueError(
                f"{type(margin).__name__} scales logits by the class-centre norm, which is "
                f"undefined with sub-centres. Received: sub_centers={self.sub_centers}"
            )
        if displacement_basis and self.sub_centers > 1:
            raise ValueError(
                "`displacement_basis` (DiscFace) needs one centre per class. Received: "
                f"displacement_basis=True with sub_centers={self.sub_centers}"
            )
        self.displacement_basis = bool(displacement_basis)
        self.margin = margin
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.check_inputs = bool(check_inputs)
        self.margin_state: dict[str, Any] = {}

    @property
    def embedding_dim(self) -> int | None:
        return None if not self.built else int(self.kernel.shape[0])

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name} expects flat embeddings of shape (batch, embedding_dim) with a "
                f"known embedding_dim. Received: input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(input_shape[-1]), self.num_classes * self.sub_centers),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.margin_state = self.margin.build(self)
        self.xi = None
        if self.displacement_basis:
            self.xi = self.add_weight(name="displacement_basis", shape=(int(input_shape[-1]),),
                                      initializer="zeros")

    def _context(self, x, training, prescale: float | None = None):
        x = ops.cast(x, self.compute_dtype)
        if len(x.shape) != 2 or (x.shape[-1] is not None and x.shape[-1] != self.kernel.shape[0]):
            raise ValueError(
                f"{self.name} was built for embeddings of shape (batch, {self.kernel.shape[0]}). "
                f"Received: embeddings.shape={tuple(x.shape)}"
            )
        if self.check_inputs:
            x = check_finite(x, "embeddings")
        if prescale is None:
            cos, x_norm, kernel_norm = cosine_logits(x, self.kernel, self.sub_centers)
        else:  # training fast path: scale folded into the matmul, only target cosines clipped
            cos, x_norm, kernel_norm = cosine_logits(x, self.kernel, self.sub_centers,
                                                     scale=prescale, clip=False)
        context = {"x_norm": x_norm, "kernel_norm": kernel_norm, "training": bool(training),
                   "embeddings": x, "kernel": self.kernel, "sub_centers": self.sub_centers}
        if self.xi is not None:
            context["xi"] = self.xi
        context.update(self.margin.context(self.margin_state, x_norm, bool(training)))
        regularization = self.margin.regularization(context)
        if regularization is not None:
            self.add_loss(regularization)
        return cos, context

    def call(self, inputs, labels=None, training=None):
        prescale = self.margin.scale if labels is not None and self.margin.prescalable else None
        cos, context = self._context(inputs, training, prescale)
        if labels is None:
            try:
                setattr(cos, CONTEXT_ATTR, context)
            except AttributeError:  # a tensor type that refuses attributes: losses will say so
                pass
            return cos
        if self.check_inputs:
            labels = prepare_labels(labels, self.num_classes)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return self.margin.logits(cos, labels, context, prescaled=prescale is not None)

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return (inputs_shape[0], self.num_classes)

    @property
    def loss(self):
        """The Keras loss that applies this head's margin to its output in ``model.fit``."""
        from keras_facemargin.losses.margin import MarginLoss

        if self.loss_class is None:
            return MarginLoss(margin=self.margin)
        return self.loss_class(**self.margin.get_config())

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            sub_centers=self.sub_centers,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            check_inputs=self.check_inputs,
            displacement_basis=self.displacement_basis,
        )
        if self.margin_class is None:
            config["margin"] = keras.saving.serialize_keras_object(self.margin)
        else:
            config.update(self.margin.get_config())
        return config
