"""Expected outputs for forgeflow's hypernetwork test, made by ComfyUI 0.3.64 itself
(refpeer kit, CPU, torch 2.6).

The tiny UNet and the A1111-layout hypernetwork files are the ones diffusion/sd's
TestHypernetworkAgainstComfyUI writes. This script loads the UNet with
comfy.model_detection + supported_models_base.BASE (SD1.5 latent format), each
hypernetwork with comfy_extras.nodes_hypernetwork.load_hypernetwork_patch, patches a
clone of the model with it as HypernetworkLoader does (set_model_attn1_patch and
set_model_attn2_patch), samples through comfy.sample.sample and writes inputs and
outputs (facts about ComfyUI's output, no ComfyUI code) to one safetensors file:

  out_hypernetwork.safetensors -> diffusion/sd/testdata/hypernetwork_refpeer.safetensors

ComfyUI leaves the hypernetwork's modules in training mode, so with use_dropout its
Dropout layers zero random activations on every call; the script reports whether two
runs then differ, and samples the dropout case with the modules in evaluation mode
(what forgeflow computes).

From the repository root (the chroot sees only the kit and $REFPEER_DIR):

    D=$REFPEER_DIR/tmp-loaders; mkdir -p $D
    go test ./diffusion/sd -run TestHypernetworkAgainstComfyUI -sd.hnmodels $D
    cp tools/refpeer/hypernetwork_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-loaders/hypernetwork_ref.py /refpeer/tmp-loaders
    cp $D/out_hypernetwork.safetensors diffusion/sd/testdata/hypernetwork_refpeer.safetensors
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

import comfy.latent_formats  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models_base  # noqa: E402
from comfy_extras.nodes_hypernetwork import load_hypernetwork_patch  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
SAMPLER = dict(steps=4, cfg=4.0, sampler_name="euler", scheduler="normal", seed=7)
PREFIX = "model.diffusion_model."
CASES = [("relu_ln", "hn_relu_ln.pt", 0.8), ("swish_out", "hn_swish_out.pt", -0.5),
         ("mish_dropout", "hn_mish_dropout.pt", 1.3), ("linear", "hn_linear.pt", 1.0)]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_unet(path):
    sd = load_file(path)
    cfg = comfy.model_detection.detect_unet_config(sd, PREFIX)
    mc = comfy.supported_models_base.BASE(cfg)
    mc.latent_format = comfy.latent_formats.SD15()
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, PREFIX)
    model.load_model_weights(sd, PREFIX)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def sample(patcher, positive, negative, latent):
    noise = comfy.sample.prepare_noise(latent, SAMPLER["seed"])
    out = comfy.sample.sample(patcher, noise, SAMPLER["steps"], SAMPLER["cfg"], SAMPLER["sampler_name"],
                              SAMPLER["scheduler"], positive, negative, latent, denoise=1.0,
                              seed=SAMPLER["seed"], disable_pbar=True)
    return out.float().contiguous()


def patched(unet, *patches):
    m = unet.clone()
    for p in patches:
        m.set_model_attn1_patch(p)
        m.set_model_attn2_patch(p)
    return m


def evaluated(patch):
    for mods in patch.hypernet.values():
        mods.eval()
    return patch


def main(d):
    files = ["unet_hn.safetensors"] + [c[1] for c in CASES]
    sums = {f: sha(os.path.join(d, f)) for f in files}
    unet = load_unet(os.path.join(d, "unet_hn.safetensors"))

    g = torch.Generator().manual_seed(20261208)
    inp = {
        "pos": torch.randn(1, 77, 32, generator=g),
        "neg": torch.randn(1, 77, 32, generator=g) * 0.5,
        "latent": torch.randn(1, 4, 8, 8, generator=g),
    }
    pos, neg = [[inp["pos"], {}]], [[inp["neg"], {}]]

    out = {"plain": sample(unet, pos, neg, inp["latent"])}
    notes = {}
    for name, f, strength in CASES:
        patch = load_hypernetwork_patch(os.path.join(d, f), strength)
        notes[name + ".widths"] = sorted(patch.hypernet.keys())
        if "dropout" in name:
            a = sample(patched(unet, patch), pos, neg, inp["latent"])
            b = sample(patched(unet, patch), pos, neg, inp["latent"])
            notes[name + ".training_mode_runs_differ_by"] = float((a - b).abs().max())
        out[name] = sample(patched(unet, evaluated(patch)), pos, neg, inp["latent"])
        if "dropout" in name:
            notes[name + ".training_vs_eval_max_diff"] = float((a - out[name]).abs().max())
    a = load_hypernetwork_patch(os.path.join(d, "hn_relu_ln.pt"), 0.8)
    b = load_hypernetwork_patch(os.path.join(d, "hn_linear.pt"), 1.0)
    out["stacked"] = sample(patched(unet, a, b), pos, neg, inp["latent"])

    meta = {"models": json.dumps(sums), "sampler": json.dumps(SAMPLER), "notes": json.dumps(notes)}
    save_file({**{"in." + k: v.contiguous() for k, v in inp.items()},
               **{"out." + k: v for k, v in out.items()}},
              os.path.join(d, "out_hypernetwork.safetensors"), metadata=meta)
    print(json.dumps({"out": sorted(out), "notes": notes, "models": sums}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
