"""Expected sampling results for diffusion/sd's TestModelPatchRefpeer and nodes/builtin's
TestModelPatchNodesRefpeer, made by ComfyUI 0.3.64 itself (refpeer kit, CPU, torch 2.6).

Loads the tiny SD1.5-layout UNet of diffusion/sd's patch tests (TestWritePatchModel) with
ComfyUI's own model classes, patches it with ComfyUI's own nodes
(UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, PatchModelAddDownscale, HyperTile) and
samples with comfy.sample.sample on conditionings drawn with a fixed torch seed. Inputs
and output latents go into one safetensors file, the runs and the model's sha256 as
metadata (facts about ComfyUI's output, no ComfyUI code).

From the repository root:

    D=$REFPEER_DIR/tmp-modelpatch; mkdir -p $D
    go test ./diffusion/sd -run TestWritePatchModel -sd.patchmodel $D
    cp tools/refpeer/modelpatch_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-modelpatch/modelpatch_ref.py /refpeer/tmp-modelpatch /refpeer/tmp-modelpatch/modelpatch_refpeer.safetensors
    cp $D/modelpatch_refpeer.safetensors diffusion/sd/testdata/
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
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
from comfy_extras.nodes_attention_multiply import UNetSelfAttentionMultiply, UNetCrossAttentionMultiply  # noqa: E402
from comfy_extras.nodes_model_downscale import PatchModelAddDownscale  # noqa: E402
from comfy_extras.nodes_hypertile import HyperTile  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
CTX = 32

# name, sampler, scheduler, steps, cfg, seed, latent shape, patches
# ["self", q, k, v, out], ["cross", q, k, v, out],
# ["shrink", block, factor, start, end, after_skip, down_method, up_method],
# ["hypertile", tile_size, swap_size, max_depth, scale_depth]
RUNS = [
    ("self", "euler", "normal", 4, 5.0, 31, [1, 4, 16, 12], [["self", 1.3, 0.6, 1.7, 0.8]]),
    ("cross", "euler", "normal", 4, 5.0, 32, [1, 4, 16, 12], [["cross", 0.7, 1.4, 0.5, 1.2]]),
    ("self_zero", "euler", "normal", 3, 5.0, 33, [1, 4, 16, 12], [["self", 1.0, 1.0, 0.0, 1.0]]),
    ("shrink", "euler", "normal", 4, 5.0, 34, [1, 4, 16, 16], [["shrink", 1, 2.0, 0.0, 0.5, True, "bicubic", "bicubic"]]),
    ("shrink_before", "euler", "normal", 4, 5.0, 35, [1, 4, 16, 16],
     [["shrink", 3, 1.5, 0.2, 0.9, False, "bislerp", "area"]]),
    ("shrink_nearest", "dpmpp_2m", "karras", 4, 5.0, 36, [2, 4, 20, 12],
     [["shrink", 2, 2.0, 0.0, 0.35, True, "nearest-exact", "bilinear"]]),
    ("stack", "euler", "normal", 4, 5.0, 37, [1, 4, 16, 16],
     [["cross", 1.2, 1.0, 0.9, 1.0], ["self", 1.0, 1.1, 1.0, 0.9], ["shrink", 1, 2.0, 0.0, 0.6, True, "bilinear", "bislerp"]]),
    ("hypertile", "euler", "normal", 4, 5.0, 38, [1, 4, 16, 16], [["hypertile", 32, 3, 1, False]]),
    ("hypertile_wide", "dpmpp_2m", "karras", 4, 5.0, 39, [2, 4, 16, 24], [["hypertile", 64, 4, 2, True]]),
    ("hypertile_swap", "euler", "normal", 5, 5.0, 40, [1, 4, 24, 24], [["hypertile", 40, 6, 1, True]]),
]


def result(out):
    return out.result[0] if hasattr(out, "result") else out[0]


def load_unet(path):
    sd = load_file(path)
    cfg = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
    mc = comfy.supported_models.SD15(cfg)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "model.diffusion_model.")
    model.load_model_weights(sd, "model.diffusion_model.")
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def patch(model, patches):
    for p in patches:
        if p[0] == "self":
            model = result(UNetSelfAttentionMultiply.execute(model, *p[1:]))
        elif p[0] == "cross":
            model = result(UNetCrossAttentionMultiply.execute(model, *p[1:]))
        elif p[0] == "shrink":
            model = result(PatchModelAddDownscale.execute(model, *p[1:]))
        elif p[0] == "hypertile":
            model = result(HyperTile.execute(model, *p[1:]))
        else:
            raise ValueError(p[0])
    return model


def main(models_dir, out_path):
    path = os.path.join(models_dir, "patch_unet.safetensors")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    base = load_unet(path)
    g = torch.Generator().manual_seed(20261207)
    tensors = {
        "pos": torch.randn(1, 77, CTX, generator=g),
        "neg": torch.randn(1, 77, CTX, generator=g) * 0.7,
    }
    pos = [[tensors["pos"], {}]]
    neg = [[tensors["neg"], {}]]
    runs = []
    for name, sampler, scheduler, steps, cfg, seed, shape, patches in RUNS:
        model = patch(base, patches)
        latent = torch.zeros(shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        with torch.no_grad():
            out = comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, pos, neg, latent,
                                      denoise=1.0, seed=seed, disable_pbar=True)
        tensors[name + ".out"] = out.float().contiguous()
        runs.append({"name": name, "sampler": sampler, "scheduler": scheduler, "steps": steps, "cfg": cfg,
                     "seed": seed, "shape": shape, "patches": patches})
        print(name, float(out.abs().max()), flush=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path,
              metadata={"runs": json.dumps(runs), "sha256": sha,
                        "made_by": "tools/refpeer/modelpatch_ref.py on ComfyUI 0.3.64 (refpeer kit)"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
