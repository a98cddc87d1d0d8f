"""insightface's own ONNX route, for ``benchmarks/export.py``'s side-by-side table. Run it with
a Python that has PyTorch (CPU is enough) and onnx; nothing of keras_facemargin is imported.

    python -m venv /work/venvs/torch
    /work/venvs/torch/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /work/venvs/torch/bin/pip install onnx onnxruntime
    /work/venvs/torch/bin/python benchmarks/insightface_torch_export.py \\
        --insightface-src /path/to/insightface --network mbf --output mbf.onnx

``--insightface-src`` is a checkout of deepinsight/insightface (or its
``recognition/arcface_torch`` folder): the backbone comes from its
``backbones.get_model(network, dropout=0.0, fp16=False, num_features=...)``, imported from
there at run time, and is exported as its ``torch2onnx.py`` does: ``eval()``, a
``(1, 3, 112, 112)`` example input, ``torch.onnx.export(net, img, output,
input_names=["data"], keep_initializers_as_inputs=False, verbose=False, opset_version=11)``
(the TorchScript exporter that script was written for, ``dynamo=False`` on torch >= 2.9, where
the default changed; ``do_constant_folding`` and ``training`` at their defaults: folded, eval),
then the input's batch dimension renamed ``'None'``. The weights are its random initialization
(``torch2onnx.py`` loads a checkpoint first; a latency comparison does not need one), with
``--trained-like`` distinct BN and PReLU values as training leaves them (the same
distributions ``benchmarks/export.py`` gives this package's model).

``--dynamic-batch`` adds ``dynamic_axes={"data": {0: "None"}}``: ``torch2onnx.py``'s file has
the batch fixed at 1 wherever the network reads it (``mbf``'s ``x.view(x.size(0), -1)`` is
traced and folded into a constant shape), so running it at batch 32 needs that export.

Prints one JSON line: versions, the insightface commit (from a ``COMMIT`` file at the root
of the checkout, when there is one), parameter counts (all, trainable, BN running statistics)
and the output path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

NETWORKS = ("mbf", "r18", "r34", "r50", "r100")


def arcface_torch_dir(src: str) -> str:
    """``recognition/arcface_torch`` inside ``src``, or ``src`` itself if it is that folder."""
    for candidate in (os.path.join(src, "recognition", "arcface_torch"), src):
        if os.path.isfile(os.path.join(candidate, "backbones", "__init__.py")):
            return candidate
    raise SystemExit(f"--insightface-src must be a checkout of deepinsight/insightface or its "
                     f"recognition/arcface_torch folder (with backbones/__init__.py). "
                     f"Received: --insightface-src={src!r}")


def commit_of(arcface_dir: str) -> str | None:
    here = os.path.abspath(arcface_dir)
    for _ in range(3):
        path = os.path.join(here, "COMMIT")
        if os.path.isfile(path):
            with open(path) as f:
                return f.read().strip() or None
        here = os.path.dirname(here)
    return None


def load_in_module_order(net, arrays: dict) -> int:
    """Assign ``arrays`` (``w0000``, ``w0001``, ...) to the network's Conv2d / BatchNorm /
    PReLU / Linear tensors in module order; every shape must match. Returns the count."""
    import torch

    values = [arrays[key] for key in sorted(arrays)]
    slots = []
    for name, module in net.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            slots += [(name, "weight", module.weight)] + (
                [(name, "bias", module.bias)] if module.bias is not None else [])
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            slots += [(name, key, getattr(module, key))
                      for key in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(module, torch.nn.PReLU):
            slots.append((name, "weight", module.weight))
    if len(slots) != len(values):
        raise SystemExit(f"--weights holds {len(values)} arrays; the network has {len(slots)} "
                         "weight tensors")
    with torch.no_grad():
        for (name, key, tensor), value in zip(slots, values, strict=True):
            if tuple(tensor.shape) != tuple(value.shape):
                raise SystemExit(f"--weights: {name}.{key} is {tuple(tensor.shape)}; "
                                 f"Received: {tuple(value.shape)}")
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    return len(slots)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--insightface-src", required=True)
    parser.add_argument("--network", required=True, choices=NETWORKS)
    parser.add_argument("--output", required=True)
    parser.add_argument("--num-features", type=int, default=512)
    parser.add_argument("--opset", type=int, default=11, help="torch2onnx.py's default: 11")
    parser.add_argument("--dynamic-batch", action="store_true")
    parser.add_argument("--weights", help=".npz of arrays w0000, w0001, ... in the order of "
                        "the network's modules (Conv2d: weight; BatchNorm: weight, bias, "
                        "running_mean, running_var; PReLU: weight; Linear: weight, bias), in "
                        "torch layouts: the same weights as another implementation")
    parser.add_argument("--trained-like", nargs=2, type=float, metavar=("GAMMA_LOW", "GAMMA_HIGH"),
                        help="set distinct BN / PReLU values as training leaves them: BN scale "
                             "uniform in [GAMMA_LOW, GAMMA_HIGH], shift and mean normal(0, 0.1), "
                             "variance uniform in [0.5, 1.5], PReLU slopes uniform in [0.1, 0.4]")
    args = parser.parse_args(argv)

    arcface_dir = arcface_torch_dir(args.insightface_src)
    import onnx
    import torch

    sys.path.insert(0, arcface_dir)
    from backbones import get_model  # insightface's code, from the checkout

    torch.manual_seed(0)
    net = get_model(args.network, dropout=0.0, fp16=False, num_features=args.num_features)
    if args.trained_like:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    module.weight.uniform_(*args.trained_like, generator=generator)
                    module.bias.normal_(0.0, 0.1, generator=generator)
                    module.running_mean.normal_(0.0, 0.1, generator=generator)
                    module.running_var.uniform_(0.5, 1.5, generator=generator)
                elif isinstance(module, torch.nn.PReLU):
                    module.weight.uniform_(0.1, 0.4, generator=generator)
    if args.weights:
        load_in_module_order(net, dict(np.load(args.weights)))
    net.eval()
    # torch2onnx.py: a random 112x112 image, (x / 255 - 0.5) / 0.5, CHW, batch of 1
    img = np.random.default_rng(0).integers(0, 255, size=(112, 112, 3)).astype(np.float64)
    img = torch.from_numpy(((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)).unsqueeze(0).float()
    kwargs = dict(input_names=["data"], keep_initializers_as_inputs=False, verbose=False,
                  opset_version=args.opset)
    if args.dynamic_batch:
        kwargs["dynamic_axes"] = {"data": {0: "None"}}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:
        kwargs["dynamo"] = False  # torch2onnx.py predates the torch.export-based exporter
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, img, args.output, **kwargs)
    model = onnx.load(args.output)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(model, args.output)

    params = list(net.parameters())
    stats = [b for name, b in net.named_buffers() if name.endswith(("running_mean",
                                                                    "running_var"))]
    print(json.dumps({
        "network": args.network, "output": args.output, "opset": args.opset,
        "dynamic_batch": args.dynamic_batch, "trained_like": args.trained_like,
        "same_weights": bool(args.weights),
        "torch": torch.__version__,
        "onnx": onnx.__version__, "insightface_commit": commit_of(arcface_dir),
        "params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "bn_running_stats": sum(b.numel() for b in stats),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
