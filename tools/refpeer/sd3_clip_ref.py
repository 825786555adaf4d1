"""Expected SD3 and Flux text encodings for diffusion/sd's TestSD3TextEncodersRefpeer,
made by ComfyUI itself.

Builds ComfyUI 0.3.64's own text encoders (comfy/text_encoders/sd3_clip.py
SD3ClipModel with every combination of CLIP-L, CLIP-G and T5-XXL, and
comfy/text_encoders/flux.py FluxClipModel) inside comfy.sd.CLIP, with the tiny
configurations of the Go test's part files (model_options *_model_config), loads the
files with CLIP.load_sd, and runs encode_from_tokens(return_pooled=True) on token lists
written here (the tokenizers are tested elsewhere).
The encodings (pooled outputs whole, conditionings as their first features and random
±1 projections of every token, to keep the file small) and the token lists go into one
safetensors file (facts about ComfyUI's output, no ComfyUI code).

From the repository root, with the refpeer kit (../shared/refpeer/README.md):

    D=$REFPEER_DIR/tmp-sd3; mkdir -p $D
    go test ./diffusion/sd -run TestWriteSD3Parts -sd.parts $D
    cp tools/refpeer/sd3_clip_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-sd3/sd3_clip_ref.py /refpeer/tmp-sd3 /refpeer/tmp-sd3/sd3_clip_refpeer.safetensors
    cp $D/sd3_clip_refpeer.safetensors diffusion/sd/testdata/
"""
import hashlib
import json
import os
import random
import sys

import torch
from safetensors.torch import load_file, save_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.sd  # noqa: E402
from comfy.text_encoders import flux, sd3_clip  # noqa: E402

START, END = 49406, 49407  # CLIP's special tokens (ComfyUI's CLIP has 49408 tokens)
PARTS = ["clip_l", "clip_g", "t5xxl"]
CONFIGS = {
    "clip_l_model_config": {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 1,
                            "num_hidden_layers": 3, "projection_dim": 64},
    "clip_g_model_config": {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 1,
                            "num_hidden_layers": 32, "projection_dim": 64},
    "t5xxl_model_config": {"d_model": 4096, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 1,
                           "vocab_size": 512},
}


class Target:
    pass


def clip_window(rng, words, weighted, pad):
    """One 77-token CLIP window: start, words, end, padding."""
    toks = [(START, 1.0)]
    for i in range(words):
        w = 1.0
        if weighted and i % 3 == 1:
            w = rng.choice([0.7, 1.2, 1.5])
        toks.append((rng.randrange(1, START), w))
    toks.append((END, 1.0))
    while len(toks) < 77:
        toks.append((pad, 1.0))
    return toks


def t5_seq(rng, words, weighted, length):
    toks = []
    for i in range(words):
        w = 1.0
        if weighted and i % 4 == 2:
            w = rng.choice([0.8, 1.3])
        toks.append((rng.randrange(3, 512), w))
    toks.append((1, 1.0))
    while len(toks) < length:
        toks.append((0, 1.0))
    return toks


def tokens(seed, windows=1, weighted=True, t5_len=24, empty=()):
    rng = random.Random(seed)
    out = {
        "l": [clip_window(rng, 5 + 3 * i, weighted, END) for i in range(windows)],
        "g": [clip_window(rng, 5 + 3 * i, weighted, 0) for i in range(windows)],
        "t5xxl": [t5_seq(rng, 9, weighted, t5_len)],
    }
    for k in empty:
        out[k] = []
    return out


# name, kind, encoders, tokens
CASES = [
    ("sd3_lgt", "sd3", ["clip_l", "clip_g", "t5xxl"], tokens(1)),
    ("sd3_lgt_2win", "sd3", ["clip_l", "clip_g", "t5xxl"], tokens(2, windows=2)),
    ("sd3_lgt_plain", "sd3", ["clip_l", "clip_g", "t5xxl"], tokens(3, weighted=False)),
    ("sd3_lg", "sd3", ["clip_l", "clip_g"], tokens(4)),
    ("sd3_lt", "sd3", ["clip_l", "t5xxl"], tokens(5)),
    ("sd3_gt", "sd3", ["clip_g", "t5xxl"], tokens(6)),
    ("sd3_l", "sd3", ["clip_l"], tokens(7)),
    ("sd3_g", "sd3", ["clip_g"], tokens(8)),
    ("sd3_t", "sd3", ["t5xxl"], tokens(9)),
    ("sd3_empty_lg", "sd3", ["clip_l", "clip_g", "t5xxl"], tokens(10, empty=("l", "g"))),
    ("sd3_empty_all", "sd3", ["clip_l", "clip_g", "t5xxl"], tokens(11, empty=("l", "g", "t5xxl"))),
    ("sd3_empty_t5", "sd3", ["clip_l", "clip_g", "t5xxl"], tokens(12, empty=("t5xxl",))),
    ("flux", "flux", ["clip_l", "t5xxl"], tokens(13, t5_len=32)),
    ("flux_plain_2win", "flux", ["clip_l", "t5xxl"], tokens(14, windows=2, weighted=False, t5_len=32)),
]


PROBES = 16


def probes(width):
    """(width, PROBES) of ±1: bit 16 of (i+1)·2654435761 mod 2³² for element i."""
    i = torch.arange(width * PROBES, dtype=torch.int64)
    bits = (((i + 1) * 2654435761) & 0xFFFFFFFF) >> 16 & 1
    return (bits.double() * 2 - 1).reshape(width, PROBES)


def build(kind, encoders, parts):
    target = Target()
    target.params = {}
    if kind == "flux":
        target.clip = flux.flux_clip(dtype_t5=torch.float16)
        target.tokenizer = flux.FluxTokenizer
    else:
        target.clip = sd3_clip.sd3_clip(clip_l="clip_l" in encoders, clip_g="clip_g" in encoders,
                                        t5="t5xxl" in encoders, dtype_t5=torch.float16)
        target.tokenizer = sd3_clip.SD3Tokenizer
    clip = comfy.sd.CLIP(target, model_options=dict(CONFIGS))
    for name in encoders:
        m, u = clip.load_sd(parts[name])
        assert not m, (name, m)
    return clip


def main(parts_dir, out_path):
    parts, sums = {}, {}
    for name in PARTS:
        path = os.path.join(parts_dir, "sd3_%s.safetensors" % name)
        with open(path, "rb") as f:
            sums[name] = hashlib.sha256(f.read()).hexdigest()
        parts[name] = load_file(path)
    tensors, cases = {}, []
    for name, kind, encoders, toks in CASES:
        clip = build(kind, encoders, parts)
        cond, pooled = clip.encode_from_tokens(toks, return_pooled=True)
        # The conditioning is up to 178 tokens of 4096: kept as its first 8 features
        # and 16 random ±1 projections of every token (float64), which any wrong
        # element shows in.
        c = cond.double()
        tensors[name + ".cond.head"] = cond[:, :, :8].float().contiguous()
        tensors[name + ".cond.proj"] = (c @ probes(c.shape[-1])).contiguous()
        tensors[name + ".pooled"] = pooled.float().contiguous()
        cases.append({"name": name, "kind": kind, "encoders": encoders,
                      "tokens": {k: [[[t, w] for t, w in win] for win in v] for k, v in toks.items()}})
    save_file(tensors, out_path, metadata={
        "cases": json.dumps(cases), "sha256": json.dumps(sums),
        "made_by": "tools/refpeer/sd3_clip_ref.py, ComfyUI 0.3.64 (a125cd84) on CPU, torch " + torch.__version__,
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
