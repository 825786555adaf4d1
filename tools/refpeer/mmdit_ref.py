"""Expected MMDiT outputs for diffusion/mmdit's TestRefpeer, made by ComfyUI itself.

Builds ComfyUI 0.3.64's own SD3 network (comfy/ldm/modules/diffusionmodules/mmdit.py
OpenAISignatureMMDITWrapper, configured by comfy/model_detection.py detect_unet_config)
from the tiny model files the Go test writes, runs it on inputs drawn here with fixed
torch seeds, and writes inputs and outputs to one safetensors file (facts about
ComfyUI's output, no ComfyUI code), with the runs and the models' sha256 as metadata.

Inside the refpeer chroot (see ../shared/refpeer/README.md), from the repository root:

    D=$REFPEER_DIR/tmp-sd3; mkdir -p $D
    go test ./diffusion/mmdit -run TestWriteRefModels -mmdit.models $D
    cp tools/refpeer/mmdit_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-sd3/mmdit_ref.py /refpeer/tmp-sd3 /refpeer/tmp-sd3/refpeer.safetensors
    cp $D/refpeer.safetensors diffusion/mmdit/testdata/
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

import comfy.model_detection  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper  # noqa: E402

MODELS = ["sd3", "sd35m", "nopos"]

# name, model, batch, height, width, text tokens, skipped blocks, pooled vector, seed
RUNS = [
    ("sd3_b2", "sd3", 2, 10, 12, 7, [], True, 1),
    ("sd3_odd", "sd3", 1, 9, 7, 5, [], True, 2),
    ("sd3_full", "sd3", 1, 16, 16, 3, [], True, 3),
    ("sd3_noy", "sd3", 1, 8, 6, 4, [], False, 4),
    ("sd3_skip", "sd3", 2, 6, 8, 4, [1], True, 5),
    ("sd35m_b2", "sd35m", 2, 10, 12, 7, [], True, 6),
    ("sd35m_odd", "sd35m", 1, 7, 11, 5, [], True, 7),
    ("sd35m_skip", "sd35m", 1, 8, 8, 6, [0, 2], True, 8),
    ("nopos", "nopos", 1, 10, 6, 4, [], False, 9),
    ("nopos_wide", "nopos", 2, 4, 14, 3, [], False, 10),
]


def skip(args, extra_args):
    return args


def main(models_dir, out_path):
    nets, sums = {}, {}
    for name in MODELS:
        path = os.path.join(models_dir, "mmdit_%s.safetensors" % name)
        with open(path, "rb") as f:
            sums[name] = hashlib.sha256(f.read()).hexdigest()
        sd = load_file(path)
        cfg = comfy.model_detection.detect_unet_config(sd, "")
        net = OpenAISignatureMMDITWrapper(**cfg, dtype=torch.float32, device="cpu",
                                          operations=comfy.ops.disable_weight_init)
        net.load_state_dict(sd, strict=True)
        nets[name] = (net.eval(), cfg)

    tensors, runs = {}, []
    for name, model, b, h, w, tokens, skips, has_y, seed in RUNS:
        net, cfg = nets[model]
        torch.manual_seed(seed)
        x = torch.randn(b, 16, h, w)
        t = torch.rand(b) * 1000
        ctx_dim = cfg["context_embedder_config"]["params"]["in_features"]
        context = torch.randn(b, tokens, ctx_dim)
        y = torch.randn(b, cfg["adm_in_channels"]) if has_y else None
        opts = {"patches_replace": {"dit": {("double_block", i): skip for i in skips}}}
        with torch.no_grad():
            out = net(x, t, context=context, y=y, transformer_options=opts)
        tensors[name + ".x"] = x
        tensors[name + ".t"] = t
        tensors[name + ".context"] = context
        if y is not None:
            tensors[name + ".y"] = y
        tensors[name + ".out"] = out.contiguous()
        runs.append({"name": name, "model": model, "skip": skips, "y": has_y})
    save_file(tensors, out_path, metadata={
        "runs": json.dumps(runs), "sha256": json.dumps(sums),
        "made_by": "tools/refpeer/mmdit_ref.py, ComfyUI 0.3.64 (a125cd84) on CPU, torch " + torch.__version__,
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
