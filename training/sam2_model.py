"""SAM2.1 hiera-tiny for box prompts: the model, split into the two graphs we export.

`build(image_size, checkpoint)` makes the `sam2` package's SAM2.1 hiera-tiny (its own
config, `configs/sam2.1/sam2.1_hiera_t.yaml`) at the given square input size, from a
checkpoint (ours or Meta's) or from random init. Only the image encoder, the prompt
encoder and the mask decoder are used: a deposit is one still frame, so the memory
modules of the video model are never run.

`ImageEncoder` and `BoxDecoder` are the two exported graphs; training runs exactly these
modules, so what is trained is what is exported.

    encoder:  image  float32 [1, 3, S, S]  RGB 0..1, resized (not letterboxed) to S x S
              -> image_embed [1, 256, S/16, S/16], high_res_0 [1, 32, S/4, S/4],
                 high_res_1 [1, 64, S/8, S/8]
    decoder:  image_embed, high_res_0, high_res_1, boxes float32 [N, 4] (x1 y1 x2 y2 in
              encoder-input pixels) -> mask_logits [N, 1, S/4, S/4], iou [N, 1]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build(image_size: int, checkpoint: Path | str | None = None) -> nn.Module:
    """SAM2.1 hiera-tiny at `image_size`; weights from `checkpoint` when given."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    model = build_sam2(
        CONFIG,
        ckpt_path=None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={image_size}"],
        apply_postprocessing=False,
    )
    if checkpoint is not None:
        load(model, checkpoint)
    return model


def load(model: nn.Module, checkpoint: Path | str) -> None:
    """Weights from Meta's `{"model": state_dict}` files or ours (same layout).

    Positional tables sized for another input size are interpolated by the model
    itself (Hiera's window/background embeddings); the memory modules may be absent.
    """
    sd = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    sd = sd.get("model", sd)
    sd = {k: v.float() for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    used = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
    missing = [k for k in missing if k.startswith(used)]
    if missing or unexpected:
        raise RuntimeError(
            f"{checkpoint}: not a SAM2.1 hiera-tiny checkpoint "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parts we train and export, as fp16 (what the project commits/ships)."""
    keep = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
    return {k: v.half() for k, v in model.state_dict().items() if k.startswith(keep)}


class ImageEncoder(nn.Module):
    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sam = self.sam
        x = (image - self.mean) / self.std
        out = sam.image_encoder(x)
        fpn = out["backbone_fpn"]
        high_res_0 = sam.sam_mask_decoder.conv_s0(fpn[0])
        high_res_1 = sam.sam_mask_decoder.conv_s1(fpn[1])
        embed = fpn[2] + sam.no_mem_embed.view(1, -1, 1, 1)
        return embed, high_res_0, high_res_1


class BoxDecoder(nn.Module):
    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_0: torch.Tensor,
        high_res_1: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for N boxes; image features of batch 1 (one frame) or batch N."""
        sam = self.sam
        n = boxes.shape[0]
        # A box is two corner points with labels 2 (top-left) and 3 (bottom-right).
        coords = boxes.reshape(n, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int64, device=boxes.device).expand(n, 2)
        sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        # Features of one frame serve every box (expand is free when they already match).
        image_embed = image_embed.expand(n, -1, -1, -1)
        high_res_0 = high_res_0.expand(n, -1, -1, -1)
        high_res_1 = high_res_1.expand(n, -1, -1, -1)
        masks, iou, _, _ = sam.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=[high_res_0, high_res_1],
        )
        return masks, iou
