"""Train SAM2.1 hiera-tiny (box prompts) from random init on frames with exact masks.

    python training/train_sam2.py --out training/runs/sam2/ckpt.pt     # the committed recipe

The defaults are the recipe of the committed weights: 12000 generated frames at 256 px,
batch 64, AdamW lr 5e-4 (warm-up, cosine), bf16 on one GPU, stopped by wall time at 5.9
minutes (about 4200 steps, 270k item crops). On a CPU, give --batch and --minutes.

Every sample is (frame, one of its items): the frame resized to S x S, the item's box as
the prompt (jittered like a detector's box), its mask as the target. Loss: BCE + dice on
the decoder's S/4 logits upsampled to S, plus the IoU head against the achieved IoU. The
whole model (image encoder, prompt encoder, mask decoder) is trained: nothing pretrained
exists here to freeze. The loop stops itself at `--minutes` wall time and saves the
trained parts in fp16 (`sam2_model.trained_state`), optionally split into chunks of
`--chunk-mb` (for transports with a file-size limit; `export_sam2.py` joins them).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sam2_data
import sam2_model


def _frame(args: tuple[int, str, int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rgb SxS uint8, mask SxS bool, box in S pixels) per item of one frame."""
    seed, split, index, size = args
    bgr, boxes, masks = sam2_data.sample(seed, split, index)
    h, w = bgr.shape[:2]
    rgb = cv2.resize(
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_LINEAR
    )
    sx, sy = size / w, size / h
    out = []
    for b, m in zip(boxes, masks, strict=True):
        if not m.any():
            continue
        mm = cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
        out.append((rgb, mm, np.array([b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy], np.float32)))
    return out


def make_items(seed: int, split: str, frames: int, size: int, workers: int):
    """Stacked arrays: images [N,S,S,3] u8, masks [N,S,S] bool, boxes [N,4], frame index [N]."""
    with Pool(workers) as pool:
        per = pool.map(_frame, [(seed, split, i, size) for i in range(frames)], chunksize=16)
    imgs, masks, boxes, idx = [], [], [], []
    for i, items in enumerate(per):
        for rgb, m, b in items:
            imgs.append(rgb)
            masks.append(m)
            boxes.append(b)
            idx.append(i)
    return np.stack(imgs), np.stack(masks), np.stack(boxes), np.array(idx)


def jitter(boxes: torch.Tensor, frac: float, size: int) -> torch.Tensor:
    """Each edge moved by N(0, frac * side): boxes as a detector would draw them."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    out = boxes + torch.randn_like(boxes) * frac * wh
    return out.clamp(0, size)


def loss_fn(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor):
    """logits [B,1,s,s] (S/4), target [B,S,S] float; BCE + dice + IoU-head MSE."""
    up = F.interpolate(
        logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0]
    bce = F.binary_cross_entropy_with_logits(up, target)
    p = up.sigmoid()
    inter = (p * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    with torch.no_grad():
        hard = up > 0
        t = target > 0.5
        iou = (hard & t).flatten(1).sum(1) / ((hard | t).flatten(1).sum(1)).clamp(min=1)
    iou_loss = F.mse_loss(iou_pred.float()[:, 0], iou)
    return bce + dice.mean() + 0.1 * iou_loss, iou.mean()


@torch.no_grad()
def evaluate(enc, dec, imgs, masks, boxes, device, batch: int = 64) -> float:
    enc.eval()
    dec.eval()
    ious = []
    for s in range(0, len(imgs), batch):
        x = torch.from_numpy(imgs[s : s + batch]).to(device).permute(0, 3, 1, 2).float() / 255
        b = torch.from_numpy(boxes[s : s + batch]).to(device)
        t = torch.from_numpy(masks[s : s + batch]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            e, h0, h1 = enc(x)
            logits, _ = dec(e, h0, h1, b)
        up = F.interpolate(logits.float(), size=t.shape[-2:], mode="bilinear")[:, 0] > 0
        ious.append(((up & t).flatten(1).sum(1) / (up | t).flatten(1).sum(1).clamp(min=1)).cpu())
    enc.train()
    dec.train()
    return float(torch.cat(ious).mean())


def save(state: dict[str, torch.Tensor], out: Path, chunk_mb: float) -> list[Path]:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not chunk_mb:
        out.write_bytes(data)
        return [out]
    step = int(chunk_mb * 2**20)
    paths = []
    for i in range(0, len(data), step):
        p = out.with_name(f"{out.name}.part{i // step:02d}")
        p.write_bytes(data[i : i + step])
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("training/runs/sam2/ckpt.pt"))
    ap.add_argument("--init", type=Path, help="start from this checkpoint (else random init)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=12000, help="training frames to generate")
    ap.add_argument("--val-frames", type=int, default=300)
    ap.add_argument("--seed", type=int, default=sam2_data.DEFAULT_SEED)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--minutes", type=float, default=5.9, help="wall-time budget of the loop")
    ap.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (0: time only)"
    )
    ap.add_argument("--jitter", type=float, default=0.04)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--chunk-mb", type=float, default=0.0)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.image_size
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
    log_f = open(args.log, "a") if args.log else None  # noqa: SIM115

    def log(**kv) -> None:
        line = json.dumps({"t": round(time.time() - t0, 1), **kv})
        print(line, flush=True)
        if log_f:
            log_f.write(line + "\n")
            log_f.flush()

    imgs, masks, boxes, _ = make_items(args.seed, "sam2-train", args.frames, size, args.workers)
    v_imgs, v_masks, v_boxes, _ = make_items(
        args.seed, "sam2-val", args.val_frames, size, args.workers
    )
    log(event="data", train_items=len(imgs), val_items=len(v_imgs), device=str(device))

    sam = sam2_model.build(size, args.init)
    sam.to(device).train()
    enc, dec = sam2_model.ImageEncoder(sam).to(device), sam2_model.BoxDecoder(sam)
    params = [
        p
        for n, p in sam.named_parameters()
        if n.startswith(
            ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
        )
    ]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    g_imgs = torch.from_numpy(imgs).to(device)
    g_masks = torch.from_numpy(masks).to(device)
    g_boxes = torch.from_numpy(boxes).to(device)
    budget = args.minutes * 60 - (time.time() - t0)
    loop_start = time.time()
    warmup = 100
    step = 0
    while True:
        elapsed = time.time() - loop_start
        if elapsed > budget or (args.max_steps and step >= args.max_steps):
            break
        frac = min(1.0, elapsed / max(budget, 1e-6))
        lr = (
            args.lr
            * min(1.0, (step + 1) / warmup)
            * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        sel = torch.randint(0, len(g_imgs), (args.batch,), device=device)
        x = g_imgs[sel].permute(0, 3, 1, 2).float() / 255
        t = g_masks[sel].float()
        b = g_boxes[sel].clone()
        # Flips: the chute is seen either way round.
        if torch.rand(()) < 0.5:
            x, t = x.flip(-1), t.flip(-1)
            b = torch.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], 1)
        if torch.rand(()) < 0.5:
            x, t = x.flip(-2), t.flip(-2)
            b = torch.stack([b[:, 0], size - b[:, 3], b[:, 2], size - b[:, 1]], 1)
        # Photometric: gain and offset per image.
        x = (x * torch.empty(len(x), 1, 1, 1, device=device).uniform_(0.7, 1.3)).clamp(0, 1)
        b = jitter(b, args.jitter, size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            e, h0, h1 = enc(x)
            logits, iou_pred = dec(e, h0, h1, b)
        loss, iou = loss_fn(logits, iou_pred, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step <= 2:
            log(step=step, loss=round(float(loss), 4), iou=round(float(iou), 4), lr=lr)
    val_iou = evaluate(enc, dec, v_imgs, v_masks, v_boxes, device)
    paths = save(sam2_model.trained_state(sam), args.out, args.chunk_mb)
    log(
        event="done",
        steps=step,
        images_seen=step * args.batch,
        val_mask_iou_gt_boxes=round(val_iou, 4),
        loop_s=round(time.time() - loop_start, 1),
        files=[p.name for p in paths],
        args={k: str(v) for k, v in vars(args).items()},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
