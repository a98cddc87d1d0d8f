"""insightface arcface_torch's training step on CPU, timed on command (run with a torch interpreter).

Started by ``benchmarks/train_throughput.py --torch-python PY --insightface-src DIR``; nothing of
keras_facemargin is imported here (the torch environment need not have TensorFlow). What it
builds, from insightface's own code imported from ``--insightface-src``
(``recognition/arcface_torch``):

* the backbone: ``backbones.get_mbf(fp16=False, num_features=512, blocks, scale)`` (``mbf``) or
  ``backbones.get_model("r50")`` and friends (``r18`` ... ``r100``);
* the head: ``partial_fc_v2.PartialFC_V2(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 512, C,
  sample_rate=1.0)`` when it runs here (it needs ``torch.distributed``, initialized below as a
  one-process gloo group, and calls ``.cuda()`` in its forward, so on a CPU-only machine it
  fails); otherwise what it computes at one process, written out: ``normalize`` both sides,
  ``linear``, ``clamp(-1, 1)``, insightface's ``CombinedMarginLoss``, ``cross_entropy``, with
  the centres initialized as it does (normal, std 0.01);
* the step of ``train_v2.py`` (fp32): ``loss.backward()``,
  ``clip_grad_norm_(backbone.parameters(), 5)``, ``opt.step()``, ``opt.zero_grad()`` with
  ``SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)`` over the backbone and the centres.

Protocol: one JSON line on stdout when ready (``{"ready": true, "head": ..., "params": ...}``),
then for every line ``{"steps": N}`` on stdin it trains N steps on random in-memory batches and
answers ``{"seconds": wall time of the N steps, "loss": last loss, "forward_s", "backward_s",
"update_s": median seconds of the step's phases (forward with the loss; backward; gradient
clipping + SGD step + zero_grad)}``; ``{"quit": true}`` or end
of input stops it. Errors are answered as ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def build(args):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)
    sys.path.insert(0, args.insightface_src)
    from backbones import get_model
    from backbones.mobilefacenet import get_mbf
    from losses import CombinedMarginLoss

    if args.backbone == "mbf":
        backbone = get_mbf(False, 512, blocks=tuple(args.blocks), scale=args.scale)
    else:
        backbone = get_model(args.backbone, fp16=False, num_features=512)
    backbone.train()
    if args.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    margin = CombinedMarginLoss(64, 1.0, 0.5, 0.0)
    head_name, head = _partial_fc(margin, args.classes)
    if head is None:
        weight = torch.nn.Parameter(torch.normal(0, 0.01, (args.classes, 512)))

        def head_loss(embeddings, labels):
            logits = F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1, 1)
            return F.cross_entropy(margin(logits, labels), labels)

        head_params = [weight]
        head_name = ("normalize + linear + clamp + insightface CombinedMarginLoss + "
                     f"cross_entropy ({head_name})")
    else:
        head_loss, head_params = head, list(head.parameters())
    opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": head_params}],
                          lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, generator=gen),
                torch.randint(0, args.classes, (args.batch,), generator=gen))
               for _ in range(4)]
    if args.channels_last:
        batches = [(x.to(memory_format=torch.channels_last), y) for x, y in batches]
    params = sum(p.numel() for p in backbone.parameters())

    def step(i, phases=None):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = head_loss(backbone(x), y.clone())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
        opt.step()
        opt.zero_grad()
        if phases is not None:
            phases.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
        return float(loss.detach())

    info = {"ready": True, "head": head_name, "params": params, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "channels_last": args.channels_last,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)")}
    return step, info


def _partial_fc(margin, classes):
    """insightface's PartialFC_V2 at sample_rate 1.0, or (reason, None) when it cannot run here."""
    import torch
    from torch import distributed

    try:
        from partial_fc_v2 import PartialFC_V2

        if not distributed.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            distributed.init_process_group("gloo", rank=0, world_size=1)
        head = PartialFC_V2(margin, 512, classes, sample_rate=1.0, fp16=False).train()
        head(torch.randn(2, 512), torch.zeros(2, dtype=torch.long))  # .cuda() inside on CPU
        return "insightface PartialFC_V2(sample_rate=1.0)", head
    except Exception as e:  # noqa: BLE001  (any failure: fall back, and say why)
        reason = f"PartialFC_V2 does not run here: {type(e).__name__}: {str(e)[:120]}"
        return reason, None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--insightface-src", required=True,
                        help="insightface's recognition/arcface_torch folder")
    parser.add_argument("--backbone", default="mbf", choices=["mbf", "r18", "r34", "r50", "r100"])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--blocks", type=int, nargs=4, default=[1, 4, 6, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true",
                        help="backbone and images in torch.channels_last (not in the recipe)")
    args = parser.parse_args(argv)
    # replies go to the real stdout; anything else printed (warnings, C++ logs) goes to stderr
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        reply.write(json.dumps(obj) + "\n")
        reply.flush()

    try:
        step, info = build(args)
    except Exception as e:  # noqa: BLE001
        send({"error": f"{type(e).__name__}: {e}"})
        return 1
    send(info)
    done = 0
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        try:
            start = time.perf_counter()
            loss, phases = float("nan"), []
            for _ in range(int(cmd["steps"])):
                loss = step(done, phases)
                done += 1
            seconds = time.perf_counter() - start
            forward, backward, update = (sorted(p)[len(p) // 2] for p in zip(*phases, strict=True))
            send({"seconds": seconds, "loss": loss, "forward_s": forward,
                  "backward_s": backward, "update_s": update})
        except Exception as e:  # noqa: BLE001
            send({"error": f"{type(e).__name__}: {e}"})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
