"""Expected outputs of a scaled-fp8 Flux for diffusion/flux's TestScaledFP8Refpeer, made by ComfyUI.

Loads the tiny "fp8 scaled" Flux files the Go test writes (float8 e4m3fn and e5m2) with
ComfyUI 0.3.64's own diffusion-model loader (comfy.sd.load_diffusion_model_state_dict:
the scaled_fp8 marker selects comfy/ops.py scaled_fp8_ops), its Flux configuration
narrowed to the tiny model's sizes (model_detection hard-codes flux1's), runs the network
on inputs drawn here with fixed torch seeds, and writes inputs and outputs to one
safetensors file (facts about ComfyUI's output, no ComfyUI code), with the runs and the
models' sha256 as metadata.

Inside the refpeer chroot (see ../shared/refpeer/README.md), from the repository root:

    D=$REFPEER_DIR/tmp-fluxextra; mkdir -p $D
    go test ./diffusion/flux -run TestWriteScaledModels -flux.scaledmodels $D
    cp tools/refpeer/flux_scaled_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-fluxextra/flux_scaled_ref.py /refpeer/tmp-fluxextra \\
        /refpeer/tmp-fluxextra/scaled_ref.safetensors
    cp $D/scaled_ref.safetensors diffusion/flux/testdata/
"""
import hashlib
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.model_detection as md  # noqa: E402
import comfy.sd  # noqa: E402

TINY = dict(hidden_size=256, num_heads=2, context_in_dim=64, vec_in_dim=32, depth=1, depth_single_blocks=1)
_detect = md.detect_unet_config


def tiny_config(sd, prefix, metadata=None):
    c = _detect(sd, prefix, metadata=metadata)
    if c.get("image_model") == "flux":
        c.update(TINY)
    return c


md.detect_unet_config = tiny_config

MODELS = ["F8_E4M3", "F8_E5M2"]
# name, model, batch, height, width, text tokens, seed
RUNS = [
    ("e4m3_b2", "F8_E4M3", 2, 4, 6, 5, 1),
    ("e5m2_odd", "F8_E5M2", 1, 5, 7, 3, 2),
]


def main(models_dir, out_path):
    nets, sums = {}, {}
    for name in MODELS:
        path = os.path.join(models_dir, "flux_scaled_%s.safetensors" % name)
        with open(path, "rb") as f:
            sums[name] = hashlib.sha256(f.read()).hexdigest()
        mp = comfy.sd.load_diffusion_model_state_dict(load_file(path))
        net = mp.model.diffusion_model.eval()
        qkv = net.double_blocks[0].img_attn.qkv
        if not hasattr(qkv, "scale_weight"):
            raise SystemExit("%s: not built as scaled fp8" % name)
        nets[name] = net
    tensors, runs = {}, []
    for name, model, b, h, w, tokens, seed in RUNS:
        torch.manual_seed(seed)
        x = torch.randn(b, 16, h, w)
        t = torch.rand(b)
        context = torch.randn(b, tokens, 64)
        y = torch.randn(b, 32)
        guidance = torch.full((b,), 3.5)
        with torch.no_grad():
            out = nets[model](x, t, context, y=y, guidance=guidance)
        for k, v in (("x", x), ("t", t), ("context", context), ("y", y), ("guidance", guidance), ("out", out.float().contiguous())):
            tensors[name + "." + k] = v
        runs.append({"name": name, "model": model})
    save_file(tensors, out_path, metadata={
        "runs": json.dumps(runs), "sha256": json.dumps(sums),
        "made_by": "tools/refpeer/flux_scaled_ref.py, ComfyUI 0.3.64 (a125cd84) on CPU, torch " + torch.__version__,
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
