#!/usr/bin/env python3
"""Writes a toy CLIP-format dual-encoder bundle: bundle.toml, image.onnx, text.onnx.

Usage: $(bash scripts/python-env.sh) scripts/make_toy_dual_encoder.py OUT_DIR

The two towers are tiny, fixed ONNX graphs aligned by construction, so that zero-shot
classification of plain-colour images with prompts such as "a photo of a {} thing." and the
class names red, green, blue, yellow, cyan, magenta is exact:

- image tower: pixel_values [N,3,32,32] (RGB scaled to [0,1]) -> GlobalAveragePool -> Flatten
  -> MatMul with a fixed 3x8 matrix W -> image_embeds [N,8]. A plain image of colour
  rgb in {0,1}^3 embeds to rgb @ W.
- text tower: input_ids [N,77] (CLIP BPE) -> Gather from a fixed [49408,8] table -> ReduceSum
  over the sequence -> text_embeds [N,8]. The table maps the CLIP BPE token of each colour word
  ("red</w>", ...; the first piece of a word of several tokens) to the image embedding of that
  colour and every other token to zero, so a prompt embeds to the image embedding of the colour
  it names.

W has rank 3, so the six colour embeddings point in six different directions: each plain
image's cosine similarity is 1 with its own colour's prompt and below 1 with every other.

The output is deterministic (same bytes on every run: fixed values, producer fields, opset 17,
IR version 8, deterministic protobuf serialisation) and the script is idempotent (files are
replaced atomically). It checks the written graphs with onnx.checker and onnxruntime, and prints
one line per colour: `colour NAME TOKEN_IDS R,G,B` (ids comma-separated) (the Rust tests compare the ids with the
CLIP BPE tokenizer).
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 32
DIM = 8
VOCAB = 49408
CONTEXT = 77
START_OF_TEXT = 49406
END_OF_TEXT = 49407
OPSET = 17
IR_VERSION = 8
PRODUCER = "imclust scripts/make_toy_dual_encoder.py"
PRODUCER_VERSION = "1"

# Colour word, its CLIP BPE tokens (checked against the tokenizer by the Rust tests in
# crates/imclust-embed: text.rs and tests/toy_model_fixture.rs), and its RGB in {0,1}. "cyan" is
# two tokens, "cy" and "an</w>"; only the first carries the colour, since "an</w>" is the word
# "an".
COLOURS = [
    ("red", (736,), (1, 0, 0)),
    ("green", (1901,), (0, 1, 0)),
    ("blue", (1746,), (0, 0, 1)),
    ("yellow", (4481,), (1, 1, 0)),
    ("cyan", (1470, 550), (0, 1, 1)),
    ("magenta", (38091,), (1, 0, 1)),
]

# "a photo of a {} thing." around the colour's tokens, in CLIP BPE.
PROMPT_BEFORE = (320, 1125, 539, 320)
PROMPT_AFTER = (946, 269)

# The image tower's projection: rank 3 (the first three columns are the identity); values are
# exact in float32.
W = np.array(
    [
        [1.0, 0.0, 0.0, 0.5, 0.0, 0.25, -0.5, 0.0],
        [0.0, 1.0, 0.0, -0.5, 0.5, 0.0, 0.25, 0.0],
        [0.0, 0.0, 1.0, 0.0, -0.5, 0.5, 0.0, 0.25],
    ],
    dtype=np.float32,
)

BUNDLE_TOML = """\
name = "toy-colors"
family = "dual"

[image]
model = "image.onnx"
input = "pixel_values"
layout = "nchw"
size = 32
resize = "squash"
interpolation = "bilinear"
channels = "rgb"
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
output = "image_embeds"
dim = 8
normalize = true

[text]
model = "text.onnx"
tokenizer = "clip-bpe"
context_length = 77
input_ids = "input_ids"
output = "text_embeds"
dim = 8
normalize = true
"""


def finish(graph):
    model = helper.make_model(
        graph,
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def image_tower():
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["rgb"], axis=1),
            helper.make_node("MatMul", ["rgb", "projection"], ["image_embeds"]),
        ],
        "toy_image_tower",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(W, "projection")],
    )
    return finish(graph)


def token_table():
    table = np.zeros((VOCAB, DIM), dtype=np.float32)
    for _, tokens, rgb in COLOURS:
        table[tokens[0]] = np.array(rgb, dtype=np.float32) @ W
    return table


def text_tower():
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["token_embedding", "input_ids"], ["token_embeds"], axis=0),
            helper.make_node("ReduceSum", ["token_embeds", "sequence_axis"], ["text_embeds"], keepdims=0),
        ],
        "toy_text_tower",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", CONTEXT])],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[
            numpy_helper.from_array(token_table(), "token_embedding"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "sequence_axis"),
        ],
    )
    return finish(graph)


def write_atomically(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def self_check(out_dir):
    """Runs the written towers: plain-colour images and single-colour-word prompts embed alike,
    and zero-shot classification of the images is exact."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    image = ort.InferenceSession(os.path.join(out_dir, "image.onnx"), opts, providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(os.path.join(out_dir, "text.onnx"), opts, providers=["CPUExecutionProvider"])
    n = len(COLOURS)
    pixels = np.zeros((n, 3, SIZE, SIZE), dtype=np.float32)
    ids = np.zeros((n, CONTEXT), dtype=np.int64)
    for i, (_, tokens, rgb) in enumerate(COLOURS):
        pixels[i] = np.array(rgb, dtype=np.float32)[:, None, None]
        prompt = [START_OF_TEXT, *PROMPT_BEFORE, *tokens, *PROMPT_AFTER, END_OF_TEXT]
        ids[i, : len(prompt)] = prompt
    (img,) = image.run(["image_embeds"], {"pixel_values": pixels})
    (txt,) = text.run(["text_embeds"], {"input_ids": ids})
    if not np.allclose(img, txt, atol=1e-6):
        raise SystemExit(f"self-check: image and text embeddings differ:\n{img}\n{txt}")
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    cos = unit(img) @ unit(txt).T
    off_diagonal = (cos - 2 * np.eye(n)).max()
    if not (np.argmax(cos, axis=1) == np.arange(n)).all() or np.diag(cos).min() < 1 - 1e-6 or off_diagonal > 0.99:
        raise SystemExit(f"self-check: zero-shot is not exact:\n{cos}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="bundle directory to write (created if missing)")
    args = parser.parse_args()
    if np.linalg.matrix_rank(W) != 3:
        raise SystemExit("W must have rank 3")
    os.makedirs(args.out_dir, exist_ok=True)
    for name, model in [("image.onnx", image_tower()), ("text.onnx", text_tower())]:
        write_atomically(os.path.join(args.out_dir, name), model.SerializeToString(deterministic=True))
    write_atomically(os.path.join(args.out_dir, "bundle.toml"), BUNDLE_TOML.encode())
    self_check(args.out_dir)
    for word, tokens, rgb in COLOURS:
        print(f"colour {word} {','.join(map(str, tokens))} {','.join(str(255 * c) for c in rgb)}")


if __name__ == "__main__":
    sys.exit(main())
