"""Expected outputs of Flux with an attention mask for diffusion/flux's TestAttentionMask.

Builds ComfyUI 0.3.64's own Flux network (comfy/ldm/flux/model.py) in the tiny
configuration of the Go test's model (hidden 256, 2 heads, one block of each kind,
context 64, vector 32, guidance), loads the model file the test writes, runs
Flux.forward with an additive attention_mask (over text then image tokens; one per item
and one shared by the batch) on inputs drawn here with fixed torch seeds, and writes
inputs and outputs to one safetensors file (facts about ComfyUI's output, no ComfyUI
code), with the run names as metadata.

Inside the refpeer chroot (see ../shared/refpeer/README.md), from the repository root:

    D=$REFPEER_DIR/tmp-fluxextra; mkdir -p $D
    go test ./diffusion/flux -run TestWriteMaskModel -flux.maskmodel $D
    cp tools/refpeer/flux_mask_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-fluxextra/flux_mask_ref.py /refpeer/tmp-fluxextra/flux_mask.safetensors \\
        /refpeer/tmp-fluxextra/mask_ref.safetensors
    cp $D/mask_ref.safetensors diffusion/flux/testdata/
"""
import hashlib
import json
import sys

import torch
from safetensors.torch import load_file, save_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.ops  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402

# name, batch, height, width, text tokens, mask batch, seed
RUNS = [
    ("per_item", 2, 4, 6, 5, 2, 1),
    ("shared_odd", 2, 5, 7, 4, 1, 2),
]


def main(model_path, out_path):
    with open(model_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    net = Flux(in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64, hidden_size=256,
               mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
               theta=10000, qkv_bias=True, guidance_embed=True, patch_size=2,
               operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu")
    net.load_state_dict(load_file(model_path), strict=True)
    net.eval()
    tensors, runs = {}, []
    for name, b, h, w, tokens, mb, seed in RUNS:
        torch.manual_seed(seed)
        x = torch.randn(b, 16, h, w)
        t = torch.rand(b)
        context = torch.randn(b, tokens, 64)
        y = torch.randn(b, 32)
        guidance = torch.full((b,), 3.5)
        n = tokens + ((h + 1) // 2) * ((w + 1) // 2)
        # Soft biases, and keys hidden from some queries by a large negative bias.
        mask = torch.randn(mb, n, n) * 2
        mask[torch.rand(mb, n, n) < 0.2] = -10000.0
        with torch.no_grad():
            out = net(x, t, context, y=y, guidance=guidance, attention_mask=mask)
        for k, v in (("x", x), ("t", t), ("context", context), ("y", y), ("guidance", guidance),
                     ("mask", mask), ("out", out.contiguous())):
            tensors[name + "." + k] = v
        runs.append(name)
    save_file(tensors, out_path, metadata={
        "runs": json.dumps(runs), "sha256": sha,
        "made_by": "tools/refpeer/flux_mask_ref.py, ComfyUI 0.3.64 (a125cd84) on CPU, torch " + torch.__version__,
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
