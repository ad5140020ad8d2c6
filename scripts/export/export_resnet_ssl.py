#!/usr/bin/env python3
"""Export a self-supervised ResNet-50 checkpoint (SimCLR, BYOL, or any torchvision-compatible
state dict) to an imclust image-only bundle: the 2048-d pooled features before the projection
head.

Runs on a machine with PyTorch (not in imclust's CI):
    pip install torch torchvision onnx
    python export_resnet_ssl.py --checkpoint simclr_r50.pth --name simclr-r50 --out bundles/simclr-r50
    python export_resnet_ssl.py --checkpoint byol_r50.pth --name byol-r50 --out bundles/byol-r50

Checkpoints from the common repositories wrap the backbone under a prefix (e.g. 'backbone.',
'encoder.', 'online_network.encoder.', 'module.'); --prefix strips it (default: try those).
Projection/prediction heads are dropped.
"""
import argparse
import os

import torch
import torchvision

PREFIXES = ["module.", "backbone.", "encoder.", "online_network.encoder.", "net."]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prefix", default=None)
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args()
    state = torch.load(a.checkpoint, map_location="cpu")
    state = state.get("state_dict", state.get("model", state))
    prefixes = [a.prefix] if a.prefix else PREFIXES
    clean = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        clean[k] = v
    net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()
    missing, unexpected = net.load_state_dict(clean, strict=False)
    missing = [m for m in missing if not m.startswith("fc.")]
    if missing:
        raise SystemExit(f"checkpoint lacks backbone weights {missing[:5]}...: pass --prefix")
    net.eval()
    os.makedirs(a.out, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), os.path.join(a.out, "image.onnx"),
                          input_names=["pixel_values"], output_names=["features"],
                          dynamic_axes={"pixel_values": {0: "b"}, "features": {0: "b"}}, opset_version=a.opset)
    with open(os.path.join(a.out, "bundle.toml"), "w") as f:
        f.write(f'''name = "{a.name}"
family = "image"

[image]
model = "image.onnx"
input = "pixel_values"
layout = "nchw"
size = 224
resize = "shortest-crop"
interpolation = "bilinear"
channels = "rgb"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
output = "features"
dim = 2048
normalize = true
''')
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
