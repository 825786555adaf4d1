"""Expected outputs of a scaled-fp8 MMDiT for diffusion/mmdit's TestScaledFP8, made by ComfyUI.

Loads the tiny "fp8 scaled" SD3.5-medium-layout file the Go test writes with ComfyUI
0.3.64's own diffusion-model loader (comfy.sd.load_diffusion_model_state_dict, which
detects the scaled_fp8 marker and builds the network with comfy/ops.py scaled_fp8_ops),
runs its network on inputs drawn here with fixed torch seeds, and writes inputs and
outputs to one safetensors file (facts about ComfyUI's output, no ComfyUI code), with the
run names and the model's sha256 as the "case" metadata.

Inside the refpeer chroot (see ../shared/refpeer/README.md), from the repository root:

    D=$REFPEER_DIR/tmp-fluxextra; mkdir -p $D
    go test ./diffusion/mmdit -run TestWriteScaledRefModel -mmdit.scaled $D
    cp tools/refpeer/scaled_fp8_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-fluxextra/scaled_fp8_ref.py /refpeer/tmp-fluxextra/mmdit_scaled.safetensors \\
        /refpeer/tmp-fluxextra/scaled_fp8_ref.safetensors
    cp $D/scaled_fp8_ref.safetensors diffusion/mmdit/testdata/
"""
import hashlib
import json
import sys

import torch
from safetensors.torch import load_file, save_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.sd  # noqa: E402

# name, batch, height, width, text tokens, seed
RUNS = [
    ("b2", 2, 10, 12, 7, 1),
    ("odd", 1, 7, 11, 5, 2),
]


def main(model_path, out_path):
    with open(model_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    sd = load_file(model_path)
    mp = comfy.sd.load_diffusion_model_state_dict(sd)
    if mp is None:
        raise SystemExit("ComfyUI did not recognise the model")
    net = mp.model.diffusion_model.eval()
    qkv = net.joint_blocks[0].x_block.attn.qkv
    if qkv.weight.dtype != torch.float8_e4m3fn or not hasattr(qkv, "scale_weight"):
        raise SystemExit("not built as scaled fp8: %s" % qkv.weight.dtype)
    ctx_dim = net.context_embedder.weight.shape[1]
    adm = net.y_embedder.mlp[0].weight.shape[1]
    tensors, runs = {}, []
    for name, b, h, w, tokens, seed in RUNS:
        torch.manual_seed(seed)
        x = torch.randn(b, 16, h, w)
        t = torch.rand(b) * 1000
        context = torch.randn(b, tokens, ctx_dim)
        y = torch.randn(b, adm)
        with torch.no_grad():
            out = net(x, t, context=context, y=y, transformer_options={})
        tensors[name + ".x"] = x
        tensors[name + ".t"] = t
        tensors[name + ".context"] = context
        tensors[name + ".y"] = y
        tensors[name + ".out"] = out.float().contiguous()
        runs.append(name)
    save_file(tensors, out_path, metadata={
        "case": json.dumps({"runs": runs, "sha256": sha}),
        "made_by": "tools/refpeer/scaled_fp8_ref.py, ComfyUI 0.3.64 (a125cd84) on CPU, torch " + torch.__version__,
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
