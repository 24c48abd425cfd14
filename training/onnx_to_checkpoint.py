"""Turn an exported YOLO11 ONNX back into a trainable Ultralytics checkpoint.

    python training/onnx_to_checkpoint.py models/deposit-yolo11n/model.onnx runs/init.pt

The export fuses every BatchNorm into its convolution, so the ONNX holds one weight and
one bias per convolution. This rebuilds the unfused YOLO11 graph from its yaml, copies
the fused weights in, and gives every BatchNorm the statistics that make it an identity
plus the fused bias: running mean/var are measured on real frames (so the batch
statistics seen in training match them), gamma = sqrt(var + eps), beta = mean + bias.
In eval mode the result computes exactly what the ONNX computes (checked); in train mode
it starts from the same function, so training can continue where the export left off
(used when a training machine returned the ONNX but not its last.pt).
"""

from __future__ import annotations

import argparse
import ast
import copy
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _frames(n: int, imgsz: int, seed: int) -> np.ndarray:
    """n letterboxed training-style frames as float32 [n, 3, imgsz, imgsz] in 0..1."""
    import cv2
    from generate_dataset import render_sample

    out = np.full((n, 3, imgsz, imgsz), 114 / 255, np.float32)
    for i in range(n):
        jpeg, _ = render_sample(seed, "train", i)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        r = min(imgsz / h, imgsz / w)
        nw, nh = round(w * r), round(h * r)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)[..., ::-1]
        top, left = (imgsz - nh) // 2, (imgsz - nw) // 2
        out[i, :, top : top + nh, left : left + nw] = img.transpose(2, 0, 1) / 255
    return out


def convert(onnx_path: Path, out: Path, yaml: str = "yolo11n.yaml", seed: int = 1) -> Path:
    import torch
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG_DICT

    proto = onnx.load(str(onnx_path))
    weights = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer
    }
    meta = {p.key: p.value for p in proto.metadata_props}
    names = ast.literal_eval(meta["names"])  # Ultralytics writes a dict literal
    imgsz = ast.literal_eval(meta["imgsz"])[0]

    model = DetectionModel(yaml, nc=len(names), verbose=False).eval()
    fused = copy.deepcopy(model).fuse(verbose=False).eval()
    state = fused.state_dict()
    missing = [k for k in state if k not in weights and "num_batches" not in k]
    if missing:
        raise SystemExit(f"{onnx_path} does not fit {yaml}: no weights for {missing[:5]}")
    fused.load_state_dict({k: weights.get(k, v) for k, v in state.items()}, strict=True)

    # Per-channel statistics of every fused convolution's output before its bias.
    convs = {n: m for n, m in model.named_modules() if isinstance(m, Conv)}
    fused_convs = dict(fused.named_modules())
    sums: dict[str, list[torch.Tensor]] = {}

    def hook(name: str):
        def record(mod, inp, outp):
            x = (outp - mod.bias.view(1, -1, 1, 1)).double()
            sums.setdefault(name, []).append(
                torch.stack([x.mean((0, 2, 3)), (x**2).mean((0, 2, 3))])
            )

        return record

    handles = [fused_convs[n].conv.register_forward_hook(hook(n)) for n in convs]
    x = torch.from_numpy(_frames(64, imgsz, seed))
    with torch.no_grad():
        for batch in x.split(16):
            fused(batch)
    for h in handles:
        h.remove()

    for name, conv in convs.items():
        fc = fused_convs[name].conv
        mean, sq = torch.stack(sums[name]).mean(0)
        var = (sq - mean**2).clamp_min(1e-6)
        bn = conv.bn
        conv.conv.weight.data.copy_(fc.weight.data)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.data.copy_(torch.sqrt(var + bn.eps).float())
        bn.bias.data.copy_((mean + fc.bias.data.double()).float())
    # Everything that is not a Conv+BN (the head's last convolutions, DFL) copies as is.
    own = model.state_dict()
    for k, v in weights.items():
        if k in own and own[k].shape == v.shape and not any(k.startswith(n + ".") for n in convs):
            own[k].copy_(v)

    with torch.no_grad():
        probe = x[:4]
        a = model.eval()(probe)[0]
        b = fused(probe)[0]
    err = float((a - b).abs().max())
    if err > 1e-2:
        raise SystemExit(f"the rebuilt model differs from the ONNX's weights by {err}")
    model.names = names
    model.args = {**DEFAULT_CFG_DICT, "imgsz": imgsz}
    ckpt = {
        "model": model.float(),
        "epoch": -1,
        "train_args": {"imgsz": imgsz},
        "source_onnx": str(onnx_path),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    print(f"{onnx_path} -> {out} (max |unfused - fused| = {err:.2e})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("onnx", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    from offline import import_ultralytics

    import_ultralytics()
    convert(args.onnx, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
