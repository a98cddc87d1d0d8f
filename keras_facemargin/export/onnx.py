"""Export an embedding model to ONNX through tf2onnx, verified, with metadata."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from keras_facemargin._checks import check_choice, check_int
from keras_facemargin.export import _common
from keras_facemargin.export._common import ConversionError
from keras_facemargin.export._pipeline import Converted, Converter, export
from keras_facemargin.export.layers import GroupedConv2D
from keras_facemargin.export.strip import without_grouped_convolutions
from keras_facemargin.export.verify import ExportReport
from keras_facemargin.preprocessing import ARCFACE_TORCH, Normalization, get_normalization
from keras_facemargin.runtime._onnx import min_onnxruntime
from keras_facemargin.runtime.metadata import KEY

QUANTIZATIONS = (None, "int8")
MAX_OPSET = 18  # tf2onnx 1.17 rejects newer opsets
#: ``"insightface"``: input [N, 3, H, W] float normalized as (x - 127.5) / 127.5 outside the
#: model (insightface's ArcFaceONNX), raw embedding out; ``"keras_facemargin"``: input
#: [N, H, W, 3] normalized as the model was trained, L2-normalized embedding out.
CONVENTIONS = ("insightface", "keras_facemargin")
DEFAULT_CONVENTION = "insightface"
#: the node-name prefixes insightface's ArcFaceONNX reads, in the first 8 nodes, as "this
#: MXNet model normalizes in the graph" (then it feeds raw pixels).
_INSIGHTFACE_IN_GRAPH_PREFIXES = ("Sub", "_minus", "Mul", "_mul")


def _conversion_error(err: Exception, opset: int, stage: str) -> ConversionError:
    last = (str(err).strip().splitlines() or [type(err).__name__])[-1][:500]
    return ConversionError(
        f"ONNX {stage} (tf2onnx, opset {opset}) failed: {type(err).__name__}: {last}. A layer "
        "of the model has no ONNX equivalent in tf2onnx: try another `opset` (13-18), export "
        "the model to TFLite instead, or replace the layer; the message above names the op.")


def convert(model: keras.Model, opset: int = 17, input_name: str = "image"):
    """The ``onnx.ModelProto`` of ``model`` with a dynamic batch dimension named ``batch``.

    Grouped convolutions are rewritten first (:func:`~keras_facemargin.export.strip.
    without_grouped_convolutions`); any converter or checker failure is raised as
    :class:`~keras_facemargin.export.tflite.ConversionError`.
    """
    import tf2onnx

    model = _native_grouped_convolutions(without_grouped_convolutions(model))
    serve = _common.serving_function(model, input_name=input_name)
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=opset)
    except Exception as err:
        raise _conversion_error(err, opset, "conversion") from err
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
    return _checked(proto, opset)


class _TracedGroupedConv2D(GroupedConv2D):
    """``GroupedConv2D`` as one TensorFlow ``Conv2D`` whose kernel has ``C_in / G`` input
    channels, for tracing only: tf2onnx converts that into one ONNX ``Conv`` with
    ``group=G`` (insightface's file has the same), where the depthwise-and-sum form costs a
    ``ReduceSum`` over a ``G * g_in * M``-channel tensor (MobileFaceNet ``scale=2``: 43% of its
    batch-1 onnxruntime time). Not run by Keras: the conversion only traces it."""

    def call(self, inputs):
        y = tf.nn.convolution(inputs, self.kernel, strides=self.strides,
                              padding=self.padding.upper(), dilations=self.dilation_rate)
        return y + self.bias if self.bias is not None else y


def _native_grouped_convolutions(model: keras.Model) -> keras.Model:
    """``model`` with each ``GroupedConv2D`` traced as one grouped ``Conv2D`` (same weights)."""
    def layers(m):
        for layer in m.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    if not any(type(layer) is GroupedConv2D for layer in layers(model)):
        return model

    def clone(layer):
        cls = _TracedGroupedConv2D if type(layer) is GroupedConv2D else layer.__class__
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _checked(proto, opset: int):
    """``proto`` with the lowest IR version its opsets allow (older runtimes load it), checked
    by ``onnx.checker.check_model(full_check=True)``."""
    import onnx

    try:
        proto.ir_version = max(7, onnx.helper.find_min_ir_version_for(
            list(proto.opset_import), ignore_unknown=True))
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:
        raise _conversion_error(err, opset, "model check") from err
    return proto


def _opset(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
               default=0)


def min_runtime(proto) -> dict[str, str]:
    """``{"onnxruntime": oldest release}`` that implements the model's opset and IR version."""
    release = min_onnxruntime(_opset(proto), proto.ir_version)
    return {"onnxruntime": release} if release else {}


def insightface_model(net: keras.Model, normalization: str | Normalization | None = None,
                      name: str | None = None) -> keras.Model:
    """``net`` (NHWC, trained on ``normalization``) as insightface's recognition models take
    input: ``[N, 3, H, W]`` float normalized as (x - 127.5) / 127.5 outside the model.

    A ``Permute`` to NHWC, then, when the model was trained with another mean / std, the
    affine map between the two (``y * 127.5 / std + (127.5 - mean) / std``) as a
    ``Rescaling``: insightface's own preprocessing then gives the trained model's embeddings.
    """
    trained = get_normalization(normalization)
    h, w, c = _common.input_shape(net)
    inputs = keras.Input((c, h, w), dtype="float32", name="input")
    x = keras.layers.Permute((2, 3, 1), name="nchw_to_nhwc")(inputs)
    if (trained.mean, trained.std) != (ARCFACE_TORCH.mean, ARCFACE_TORCH.std):
        x = keras.layers.Rescaling(ARCFACE_TORCH.std / trained.std,
                                   (ARCFACE_TORCH.mean - trained.mean) / trained.std,
                                   name="arcface_torch_to_trained")(x)
    return keras.Model(inputs, net(x), name=name or f"{net.name}_insightface")


def fold_input_scale(proto):
    """Fold ``Mul(graph input, scalar)`` into the ``Conv`` layers it feeds (their weights times
    the scalar; zero padding stays zero, so the result is the same up to rounding).

    The insightface file of a model trained on (x - 127.5) / 128 starts with ``y * 127.5 /
    128``; left as its own op, int8 quantization rounds the input twice (trained MobileFaceNet
    min cosine 0.9895 instead of >= 0.99). The graph is unchanged when the pattern is absent.
    """
    from onnx import numpy_helper

    graph = proto.graph
    inputs = {value.name for value in graph.input}
    inits = {tensor.name: tensor for tensor in graph.initializer}
    consts = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}

    def scalar(name):
        if name in inits:
            array = numpy_helper.to_array(inits[name])
        elif name in consts and consts[name].attribute and consts[name].attribute[0].name == "value":
            array = numpy_helper.to_array(consts[name].attribute[0].t)
        else:
            return None
        return float(array.reshape(-1)[0]) if array.size == 1 else None

    for mul in list(graph.node):
        if mul.op_type != "Mul" or mul.input[0] not in inputs:
            continue
        scale = scalar(mul.input[1])
        users = [node for node in graph.node if mul.output[0] in node.input]
        if scale is None or not users or any(
                node.op_type != "Conv" or list(node.input).index(mul.output[0]) != 0
                or node.input[1] not in inits for node in users):
            continue
        for node in users:
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32) * scale
            name = f"{node.input[1]}/input_scale_folded"
            graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), name))
            node.input[0], node.input[1] = mul.input[0], name
        graph.node.remove(mul)
    used = {name for node in graph.node for name in node.input}
    outputs = {value.name for value in graph.output}
    keep = [t for t in graph.initializer if t.name in used or t.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for node in [n for n in graph.node if n.op_type == "Constant"
                 and n.output[0] not in used and n.output[0] not in outputs]:
        graph.node.remove(node)
    return proto


def prelu_ops(proto):
    """Rewrite Keras' PReLU, ``Add(Relu(y), Mul(Relu(Neg(y)), -alpha))`` as tf2onnx writes it,
    into ONNX's ``PRelu(y, alpha)`` (the same values: ``max(y, 0) + alpha * min(y, 0)``).

    The five element-wise ops each read and write the whole activation, and onnxruntime's
    NCHWc layout converts back twice per PReLU; its ``PRelu`` kernel is one pass (what
    insightface's torch.onnx files contain), with the slope shaped ``[C, 1, 1]`` as torch
    writes it (``[1, C, 1, 1]`` ran MobileFaceNet 14% slower at batch 1). Measured on a loaded
    2-core Intel Xeon, 1 thread, onnxruntime 1.31: MobileFaceNet ``scale=2`` 35.5 -> 30.9 ms at
    batch 1, 89.5 -> 61.5 ms per image at batch 32; IResNet-18 181.6 -> 161.8 and 166.1 ->
    138.0 ms; outputs bit-identical. Only patterns whose slope is a constant are rewritten;
    the graph is unchanged otherwise.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    outputs = {value.name for value in graph.output}

    def private(name):  # used once, not a graph output: safe to remove its producer
        return consumers.get(name, 0) == 1 and name not in outputs

    rewrites = []
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        pos, mul = (producer.get(name) for name in add.input)
        if pos is None or mul is None or pos.op_type != "Relu" or mul.op_type != "Mul":
            pos, mul = mul, pos
        if (pos is None or mul is None or pos.op_type != "Relu" or mul.op_type != "Mul"
                or not private(pos.output[0]) or not private(mul.output[0])):
            continue
        for relu_in, slope_in in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
            neg_relu = producer.get(relu_in)
            neg = producer.get(neg_relu.input[0]) if neg_relu is not None else None
            if (neg_relu is not None and neg_relu.op_type == "Relu" and neg is not None
                    and neg.op_type == "Neg" and neg.input[0] == pos.input[0]
                    and slope_in in inits and private(neg_relu.output[0])
                    and private(neg.output[0])):
                rewrites.append((add, pos, mul, neg_relu, neg, slope_in))
                break
    for add, pos, mul, neg_relu, neg, slope_in in rewrites:
        slope = -numpy_helper.to_array(inits[slope_in]).astype(np.float32)
        while slope.ndim > 1 and slope.shape[0] == 1:  # [1, C, 1, 1] -> [C, 1, 1], as torch
            slope = slope[0]  # writes it; same broadcast, and onnxruntime runs it faster
        name = f"{add.output[0]}/prelu_slope"
        graph.initializer.append(numpy_helper.from_array(slope, name))
        node = helper.make_node("PRelu", [pos.input[0], name], [add.output[0]],
                                name=f"{add.name}/prelu")
        graph.node.insert(list(graph.node).index(add), node)
        for old in (add, pos, mul, neg_relu, neg):
            graph.node.remove(old)
    if rewrites:
        _drop_unused_initializers(graph, outputs)
    return proto


def _drop_unused_initializers(graph, outputs) -> None:
    """Remove the constants no node reads any more (and no graph output names)."""
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used or t.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def batchnorm_ops(proto):
    """Rewrite a per-channel affine map, ``Add(Mul(x, s), t)`` with constant ``s`` and ``t``
    of shape ``[1, C, 1, 1]`` on a 4-D ``x`` (a BatchNormalization tf2onnx could not fold into
    a convolution: IResNet's BN before each block's first conv), into ONNX's
    ``BatchNormalization(x, scale=s, B=t, mean=0, var=1, epsilon=0)``: the same values
    (``(x - 0) / sqrt(1 + 0) * s + t``), as insightface's torch.onnx files carry it.

    onnxruntime turns that op into part of its NCHWc convolution chain, while the Mul / Add
    pair leaves and re-enters the blocked layout: IResNet-18 178 -> 165 ms at batch 1, 184 ->
    157 ms per image at batch 32 (loaded 2-core Intel Xeon, 1 thread), outputs bit-identical.
    The graph is unchanged where the pattern is absent.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {tensor.name: tensor for tensor in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses: dict = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {value.name for value in graph.output}

    def channel_constant(name):
        if name not in inits or list(inits[name].dims)[:1] + list(inits[name].dims)[2:] != [
                1, 1, 1] or len(inits[name].dims) != 4:
            return None
        return numpy_helper.to_array(inits[name]).astype(np.float32).reshape(-1)

    candidates = []
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        mul = producer.get(add.input[0])
        if (mul is None or mul.op_type != "Mul" or uses.get(mul.output[0]) != 1
                or mul.output[0] in outputs):
            continue
        scale, shift = channel_constant(mul.input[1]), channel_constant(add.input[1])
        if scale is not None and shift is not None and scale.shape == shift.shape:
            candidates.append((add, mul, scale, shift))
    if not candidates:
        return proto
    # x must be 4-D with C channels on axis 1 (a [1, C, 1, 1] constant would broadcast a
    # lower-rank x up, or a single channel over a wider axis)
    shapes = onnx.shape_inference.infer_shapes(proto).graph
    dims = {value.name: [d.dim_value if d.HasField("dim_value") else None
                         for d in value.type.tensor_type.shape.dim]
            for value in list(shapes.value_info) + list(shapes.input)
            if value.type.tensor_type.HasField("shape")}
    for add, mul, scale, shift in candidates:
        shape = dims.get(mul.input[0])
        if shape is None or len(shape) != 4 or shape[1] != scale.size:
            continue
        names = [f"{add.output[0]}/bn_{key}" for key in ("scale", "shift", "mean", "var")]
        for name, value in zip(names, (scale, shift, np.zeros_like(scale),
                                       np.ones_like(scale)), strict=True):
            graph.initializer.append(numpy_helper.from_array(value, name))
        node = helper.make_node("BatchNormalization", [mul.input[0], *names], [add.output[0]],
                                name=f"{add.name}/batchnorm", epsilon=0.0)
        graph.node.insert(list(graph.node).index(add), node)
        graph.node.remove(add)
        graph.node.remove(mul)
    _drop_unused_initializers(graph, outputs)
    return proto


def _insightface_node_names(proto):
    """Rename nodes whose names ArcFaceONNX would take for in-graph normalization (it then
    feeds raw pixels: wrong embeddings, silently). Names carry no meaning in ONNX."""
    taken = {node.name for node in proto.graph.node}
    for node in proto.graph.node:
        if node.name.startswith(_INSIGHTFACE_IN_GRAPH_PREFIXES):
            new = f"kfm_{node.name}"
            while new in taken:
                new = f"kfm_{new}"
            taken.add(new)
            node.name = new
    return proto


class _Calibration:
    """onnxruntime CalibrationDataReader over normalized images, one per call."""

    def __init__(self, name: str, images: np.ndarray):
        self.name, self.images, self.index = name, images, 0

    def get_next(self):
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.name: self.images[self.index - 1:self.index]}

    def rewind(self):
        self.index = 0


def quantize_int8(proto, calibration: np.ndarray, reduce_range: bool = True):
    """Static QDQ quantization with onnxruntime: uint8 activations, per-channel int8 weights,
    after onnxruntime's float pre-processing, with the final L2 normalization kept in float.

    ``reduce_range=True`` quantizes the weights to 7 bits. onnxruntime's int8 kernels on x86
    CPUs without VNNI (AVX2, AVX-512F) add pairs of uint8 x int8 products in int16, which
    saturates with 8-bit weights: on a 2-core AMD EPYC (AVX2) a small trained ConvNet gave min
    cosine 0.975 when run, although the same QDQ file evaluated without the fused kernels gave
    0.9991; with 7-bit weights both give 0.9988 (onnxruntime's own advice for such CPUs).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (os.path.join(tmp, f"{name}.onnx") for name in ("float", "pre", "int8"))
        onnx.save(proto, src)
        # onnxruntime's float graph optimizations first (Pad and BN's Mul/Add folded into
        # Conv), so each folded op is quantized once: trained MobileFaceNet 0.9894 -> 0.9941
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, _Calibration(proto.graph.input[0].name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=l2_normalize_nodes(onnx.load(pre))
                        + input_convolution_nodes(onnx.load(pre)))
        return onnx.load(dst)


def input_convolution_nodes(proto) -> list[str]:
    """Names of the ``Conv`` nodes fed by the graph input, kept in float by int8.

    Normalized pixels do not land on an 8-bit grid ((p - 127.5) / 127.5 with an integer zero
    point falls half-way between two steps), so quantizing the input rounds every pixel by
    half a step; which way depends on float rounding of the input scale. Keeping the first
    convolution in float removes that error.
    """
    inputs = {value.name for value in proto.graph.input}
    return [node.name for node in proto.graph.node
            if node.op_type == "Conv" and node.input and node.input[0] in inputs]


def l2_normalize_nodes(proto) -> list[str]:
    """Names of the nodes of ``strip_head``'s final L2 normalization, kept in float by int8.

    A unit vector of D components (each about 1/sqrt(D), 0.044 at D = 512) quantized to 8 bits
    over [-1, 1] loses several percent of cosine; TFLite int8 runs this step on the host.
    """
    pattern = re.compile(r"(^|/)l2_normalize(_\d+)?/")
    return [node.name for node in proto.graph.node if pattern.search(node.name)]


def run_onnx(path: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings by the ONNX model at ``path`` (onnxruntime, through the runtime) of NHWC
    float images already normalized as the file expects."""
    from keras_facemargin.runtime import Embedder

    return Embedder.open(path).embed(images, batch_size=batch_size, normalized=True)


class ONNXConverter(Converter):
    """The ONNX step of :func:`~keras_facemargin.export._pipeline.export`: tf2onnx, checked,
    optionally int8 (onnxruntime QDQ), metadata in ``metadata_props``, run with onnxruntime
    through the runtime.

    Args:
        quantization: `None` or ``"int8"``.
        convention: ``"insightface"`` (NCHW, (x - 127.5) / 127.5, raw embedding) or
            ``"keras_facemargin"`` (NHWC, the trained normalization).
        opset: the ONNX opset, 13 to 18.
        l2_normalize: end the graph with the L2 normalization (otherwise the runtime
            L2-normalizes the output on the host).
        reduce_range: 7-bit int8 weights (see :func:`quantize_int8`).
    """

    format = "onnx"
    calibration_argument = "`calibration_data`"

    def __init__(self, quantization: str | None, *, convention: str = DEFAULT_CONVENTION,
                 opset: int = 17, l2_normalize: bool = False, reduce_range: bool = True):
        super().__init__(quantization, l2_normalize=l2_normalize,
                         normalize_on_host=not l2_normalize)
        self.convention = convention
        self.opset = opset
        self.reduce_range = reduce_range

    def convert(self, net: keras.Model, head: keras.layers.Layer | None,
                calibration: np.ndarray | None, held: np.ndarray,
                normalization: Normalization) -> Converted:
        """The ``.onnx`` bytes of ``net`` in the chosen convention, with the package's metadata
        (see :meth:`Converter.convert`); the file takes the held-out images normalized (and
        laid out) as the convention says."""
        insightface = self.convention == "insightface"
        trained = normalization
        expected = ARCFACE_TORCH if insightface else trained

        def file_input(x: np.ndarray) -> np.ndarray:  # trained-normalized NHWC -> the file's
            return x if expected == trained else expected.apply(trained.invert(x))

        opset = self.opset
        if insightface:
            proto = _insightface_node_names(fold_input_scale(convert(
                insightface_model(net, trained), opset, input_name="input")))
        else:
            proto = convert(net, opset)
        if self.quantization is None:  # int8 keeps the element-wise form its recipe was tuned on
            proto = batchnorm_ops(prelu_ops(proto))
        if self.quantization == "int8":
            calib = file_input(calibration)
            if insightface:
                calib = np.ascontiguousarray(calib.transpose(0, 3, 1, 2))
            proto = quantize_int8(proto, calib, reduce_range=self.reduce_range)
            proto = _checked(proto, opset)
            if insightface:
                proto = _insightface_node_names(proto)
        meta = _common.metadata(net, head, self.quantization,
                                normalize_on_host=self.normalize_on_host, normalization=trained,
                                file_normalization=expected,
                                layout="NCHW" if insightface else "NHWC",
                                convention=self.convention, min_runtime=min_runtime(proto))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = KEY, meta.to_json()
        return Converted(proto.SerializeToString(), file_input(held), held)

    def run(self, path: str, inputs: np.ndarray) -> np.ndarray:
        """onnxruntime's embeddings of ``inputs`` (see :func:`run_onnx`).

        Args:
            path: the ``.onnx`` file.
            inputs: :attr:`Converted.inputs`.

        Returns:
            The (N, D) embeddings, L2-normalized.
        """
        return run_onnx(path, inputs)


def to_onnx(model: keras.Model, path: str | os.PathLike, opset: int = 17,
            quantization: str | None = None,
            calibration_data: np.ndarray | Iterable | None = None, *,
            convention: str | None = None, layout: str | None = None,
            normalization: str | Normalization | tuple[float, float] | None = None,
            embedding_layer: str | keras.layers.Layer | None = None,
            verification_data: np.ndarray | None = None, verify: bool = True,
            force: bool = False, strip: bool | None = None, l2_normalize: bool | None = None,
            flip_fusion: bool = False, head_layer: str | None = None,
            reduce_range: bool = True) -> ExportReport:
    """Export the embedding part of ``model`` to a verified ``.onnx`` file.

    Two conventions (``convention=``, or ``layout=`` ``"nchw"`` / ``"nhwc"``):

    * ``"insightface"`` (the default): input ``[N, 3, H, W]`` float normalized as
      ``(x - 127.5) / 127.5`` outside the model, as insightface's ``ArcFaceONNX.get_feat``
      feeds it; one output ``[N, D]``, the raw embedding (insightface L2-normalizes
      afterwards). insightface's ``model_zoo.get_model`` routes the file to ``ArcFaceONNX``. A
      model trained with another mean / std (``normalization=``) gets the affine map between
      the two in the graph, so insightface's preprocessing gives the trained embeddings.
    * ``"keras_facemargin"``: input ``[N, H, W, 3]`` normalized as the model was trained,
      output L2-normalized (as the TFLite files).

    Converted with tf2onnx (opset <= 18; grouped convolutions rewritten as depthwise + sum),
    batch dimension named ``batch``, the lowest IR version the opset allows,
    ``onnx.checker.check_model(full_check=True)`` passed, metadata in ``metadata_props``
    (layout, normalization, minimum onnxruntime), run with onnxruntime through
    :class:`~keras_facemargin.runtime.Embedder` on held-out images and compared with the Keras
    embedding model (min cosine 0.99999 for float32, 0.99 for int8) before the file is renamed
    into place. Converter failures raise
    :class:`~keras_facemargin.export.tflite.ConversionError`, never a raw converter error.

    Args:
        model: a trained model with a margin head, or a model and its ``embedding_layer``.
        path: the ``.onnx`` file to write.
        opset: ONNX opset, 13 to 18. Defaults to `17`.
        quantization: `None` or ``"int8"`` (onnxruntime static QDQ quantization).
        calibration_data: calibration images for ``"int8"``.
        convention: ``"insightface"`` or ``"keras_facemargin"``. Defaults to `None`:
            from ``layout`` (``"nchw"``: insightface, ``"nhwc"``: keras_facemargin), else
            ``"insightface"``.
        layout: ``"nchw"`` or ``"nhwc"``, the other way to choose the convention. Defaults to
            `None`.
        normalization: the pixel normalization the model was trained with
            (:func:`keras_facemargin.preprocessing.get_normalization`: ``"keras_facemargin"``
            127.5 / 128, ``"arcface_torch"`` 127.5 / 127.5, or ``(mean, std)``); uint8
            verification / calibration images are normalized with it. Defaults to `None`:
            127.5 / 128.
        embedding_layer: for a model without a margin head, the layer (or its name) whose
            output is the embedding. Defaults to `None`.
        verification_data: held-out images to verify on. Defaults to `None`: for ``"int8"``
            the last quarter (at most 64) of ``calibration_data``, left out of the
            calibration; otherwise 16 seeded random images.
        verify, force, strip, flip_fusion, head_layer: as in ``to_tflite``.
        l2_normalize: end the graph with the L2 normalization. Defaults to `None`: `False`
            for insightface (raw embedding, as its models), `True` otherwise.
        reduce_range: for ``"int8"``, quantize the weights to 7 bits instead of 8. Defaults
            to `True`: onnxruntime's int8 kernels on x86 CPUs without VNNI saturate with 8-bit
            weights (see :func:`quantize_int8`); `False` suits VNNI and ARM targets.

    Returns:
        An :class:`~keras_facemargin.export.ExportReport`.

    Example:

    >>> from keras_facemargin.export import to_onnx
    >>> report = to_onnx(model, "face.onnx")          # insightface-format   # doctest: +SKIP
    >>> # insightface.model_zoo.get_model("face.onnx").get_feat(bgr_crop)    # doctest: +SKIP
    """
    opset = check_int("opset", opset, low=13)
    if opset > MAX_OPSET:
        raise ValueError(f"`opset` must be <= {MAX_OPSET} (tf2onnx 1.17). Received: "
                         f"opset={opset}")
    quantization = check_choice("quantization", quantization, QUANTIZATIONS)
    convention = _convention(convention, layout)
    trained = get_normalization(normalization)
    if l2_normalize is None:
        l2_normalize = convention != "insightface"
    converter = ONNXConverter(quantization, convention=convention, opset=opset,
                              l2_normalize=l2_normalize, reduce_range=reduce_range)
    return export(model, path, converter, calibration_data=calibration_data,
                  verification_data=verification_data, normalization=trained, strip=strip,
                  embedding_layer=embedding_layer, flip_fusion=flip_fusion,
                  head_layer=head_layer, verify=verify, force=force)


def _convention(convention: str | None, layout: str | None) -> str:
    if layout is not None:
        layouts = {"nchw": "insightface", "nhwc": "keras_facemargin"}
        key = str(layout).lower()
        if key not in layouts:
            raise ValueError(f"`layout` must be 'nchw' or 'nhwc'. Received: layout={layout!r}")
        if convention is not None and convention != layouts[key]:
            raise ValueError(f"`layout` and `convention` disagree: convention "
                             f"{convention!r} uses layout "
                             f"{'nchw' if convention == 'insightface' else 'nhwc'}. Received: "
                             f"convention={convention!r}, layout={layout!r}")
        return layouts[key]
    if convention is None:
        return DEFAULT_CONVENTION
    return check_choice("convention", convention, CONVENTIONS)
