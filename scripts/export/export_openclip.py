#!/usr/bin/env python3
"""Export an OpenCLIP / OpenAI CLIP model to an imclust dual-encoder bundle.

Runs on a machine with internet access and PyTorch (not in imclust's CI):
    pip install torch open_clip_torch onnx
    python export_openclip.py --model ViT-B-32 --pretrained openai --out bundles/clip-vit-b32

Writes image.onnx, text.onnx and bundle.toml (see docs/bundles.md). Check the result with
`imclust models inspect bundles/clip-vit-b32`.
"""
import argparse
import os

import open_clip
import torch


class ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode_image(pixel_values)


class TextTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.encode_text(input_ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="openai")
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args()
    model, _, preprocess = open_clip.create_model_and_transforms(a.model, pretrained=a.pretrained)
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = list(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = list(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    ctx = model.context_length
    os.makedirs(a.out, exist_ok=True)
    with torch.no_grad():
        dim = model.encode_image(torch.zeros(1, 3, size, size)).shape[-1]
        torch.onnx.export(ImageTower(model), torch.zeros(1, 3, size, size), os.path.join(a.out, "image.onnx"),
                          input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, opset_version=a.opset)
        torch.onnx.export(TextTower(model), torch.zeros(1, ctx, dtype=torch.int64), os.path.join(a.out, "text.onnx"),
                          input_names=["input_ids"], output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "batch"}, "text_embeds": {0: "batch"}}, opset_version=a.opset)
    with open(os.path.join(a.out, "bundle.toml"), "w") as f:
        f.write(f'''name = "openclip-{a.model}-{a.pretrained}"
family = "dual"

[image]
model = "image.onnx"
input = "pixel_values"
layout = "nchw"
size = {size}
resize = "shortest-crop"
interpolation = "bicubic"
channels = "rgb"
scale = 0.00392156862745098
mean = {mean}
std = {std}
output = "image_embeds"
dim = {dim}
normalize = true

[text]
model = "text.onnx"
tokenizer = "clip-bpe"
context_length = {ctx}
input_ids = "input_ids"
output = "text_embeds"
dim = {dim}
normalize = true
''')
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
