#!/usr/bin/env python3
"""Export a SigLIP (or other Hugging Face dual encoder, e.g. LiT-style) model to an imclust
dual-encoder bundle, with its tokenizer as tokenizer.json.

Runs on a machine with internet access (not in imclust's CI):
    pip install torch transformers sentencepiece protobuf onnx
    python export_siglip.py --model google/siglip-base-patch16-224 --out bundles/siglip-b16

SigLIP pads text to the full context with its pad token and has no attention mask input;
models trained with a mask (LiT/BERT-style towers) get `attention_mask` wired in automatically.
"""
import argparse
import os

import torch
from transformers import AutoModel, AutoProcessor, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="google/siglip-base-patch16-224")
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args()
    model = AutoModel.from_pretrained(a.model).eval()
    proc = AutoProcessor.from_pretrained(a.model)
    tok = AutoTokenizer.from_pretrained(a.model)
    size = proc.image_processor.size.get("height", 224)
    mean, std = proc.image_processor.image_mean, proc.image_processor.image_std
    ctx = getattr(model.config.text_config, "max_position_embeddings", 64)
    uses_mask = "attention_mask" in tok.model_input_names and "siglip" not in a.model.lower()
    os.makedirs(a.out, exist_ok=True)
    tok.backend_tokenizer.save(os.path.join(a.out, "tokenizer.json"))

    class Img(torch.nn.Module):
        def forward(self, pixel_values):
            return model.get_image_features(pixel_values=pixel_values)

    class Txt(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

    with torch.no_grad():
        x = torch.zeros(1, 3, size, size)
        dim = Img()(x).shape[-1]
        torch.onnx.export(Img(), x, os.path.join(a.out, "image.onnx"), input_names=["pixel_values"],
                          output_names=["image_embeds"], dynamic_axes={"pixel_values": {0: "b"}, "image_embeds": {0: "b"}},
                          opset_version=a.opset)
        ids = torch.zeros(1, ctx, dtype=torch.int64)
        args = (ids, torch.ones_like(ids)) if uses_mask else (ids,)
        names = ["input_ids", "attention_mask"] if uses_mask else ["input_ids"]
        torch.onnx.export(Txt(), args, os.path.join(a.out, "text.onnx"), input_names=names,
                          output_names=["text_embeds"], dynamic_axes={n: {0: "b"} for n in names + ["text_embeds"]},
                          opset_version=a.opset)
    mask_line = 'attention_mask = "attention_mask"\n' if uses_mask else ""
    with open(os.path.join(a.out, "bundle.toml"), "w") as f:
        f.write(f'''name = "{a.model.split('/')[-1]}"
family = "dual"

[image]
model = "image.onnx"
input = "pixel_values"
layout = "nchw"
size = {size}
resize = "squash"
interpolation = "bicubic"
channels = "rgb"
scale = 0.00392156862745098
mean = {list(mean)}
std = {list(std)}
output = "image_embeds"
dim = {dim}
normalize = true

[text]
model = "text.onnx"
tokenizer = "tokenizer.json"
context_length = {ctx}
input_ids = "input_ids"
{mask_line}output = "text_embeds"
dim = {dim}
normalize = true
''')
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
