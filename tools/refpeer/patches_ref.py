"""Expected sampling results for diffusion/sd's TestPatchesRefpeer, made by ComfyUI 0.3.64
itself (refpeer kit, CPU, torch 2.6).

Loads the Go test's tiny SD1.5-layout UNet (real key names, float32 random weights,
three levels so that FreeU's model_channels·4 and ·2 output blocks both exist) with
ComfyUI's own code (comfy.model_detection.detect_unet_config +
supported_models.SD15: 8 heads, eps, the SD1.5 latent format), patches it with
ComfyUI's own patch nodes (FreeU, FreeU_V2, RescaleCFG, PerturbedAttentionGuidance,
SelfAttentionGuidance, PerpNeg, FreSca, ModelSamplingContinuousEDM/V) or builds
PerpNegGuider, and samples with comfy.sample.sample (KSampler's path) or the guider's
sample (SamplerCustomAdvanced's path) on conditionings drawn here with fixed torch seeds.
Inputs and output latents go into one safetensors file, the runs and the model's
sha256 as metadata (facts about ComfyUI's output, no ComfyUI code).

From the repository root:

    D=$REFPEER_DIR/tmp-vision; mkdir -p $D
    go test ./diffusion/sd -run TestWritePatchModel -sd.patchmodel $D
    cp tools/refpeer/patches_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-vision/patches_ref.py /refpeer/tmp-vision /refpeer/tmp-vision/patches_refpeer.safetensors
    cp $D/patches_refpeer.safetensors diffusion/sd/testdata/
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
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
from comfy_extras.nodes_freelunch import FreeU, FreeU_V2  # noqa: E402
from comfy_extras.nodes_model_advanced import RescaleCFG, ModelSamplingContinuousEDM, ModelSamplingContinuousV  # noqa: E402
from comfy_extras.nodes_pag import PerturbedAttentionGuidance  # noqa: E402
from comfy_extras.nodes_sag import SelfAttentionGuidance  # noqa: E402
from comfy_extras.nodes_perpneg import PerpNeg, PerpNegGuider  # noqa: E402
from comfy_extras.nodes_fresca import FreSca  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")

# name, sampler, scheduler, steps, cfg, seed, latent shape, patches
# patch forms: ["freeu", b1, b2, s1, s2], ["freeu_v2", ...], ["rescale", m], ["pag", s],
# ["sag", scale, blur], ["perpneg", neg_scale], ["fresca", low, high, cutoff],
# ["edm", sampling, sigma_max, sigma_min], ["cont_v", sigma_max, sigma_min],
# ["perpneg_guider", neg_scale] (sampled through the guider instead of KSampler)
RUNS = [
    ("plain", "euler", "normal", 4, 5.0, 3, [1, 4, 16, 12], []),
    ("freeu", "euler", "normal", 4, 5.0, 3, [1, 4, 16, 12], [["freeu", 1.1, 1.2, 0.9, 0.2]]),
    ("freeu_v2", "dpmpp_2m", "karras", 4, 5.0, 4, [2, 4, 12, 12], [["freeu_v2", 1.3, 1.4, 0.9, 0.2]]),
    ("freeu_odd", "euler", "normal", 3, 5.0, 5, [1, 4, 20, 12], [["freeu", 1.5, 0.6, 0.3, 1.7]]),
    ("rescale", "euler", "normal", 4, 7.0, 6, [2, 4, 16, 12], [["rescale", 0.7]]),
    ("pag", "euler", "normal", 4, 4.0, 7, [1, 4, 16, 12], [["pag", 3.0]]),
    ("sag", "euler", "normal", 4, 5.0, 8, [1, 4, 16, 12], [["sag", 0.5, 2.0]]),
    ("sag_cfg1", "euler", "normal", 3, 1.0, 9, [1, 4, 16, 16], [["sag", 0.8, 1.0]]),
    ("perpneg", "euler", "normal", 4, 6.0, 10, [1, 4, 16, 12], [["perpneg", 1.0]]),
    ("fresca", "euler", "normal", 4, 5.0, 11, [1, 4, 16, 12], [["fresca", 1.0, 1.25, 2]]),
    ("fresca_wide", "euler", "normal", 3, 5.0, 12, [1, 4, 12, 20], [["fresca", 0.8, 1.5, 20]]),
    ("edm_eps", "euler", "karras", 4, 5.0, 13, [1, 4, 16, 12], [["edm", "eps", 120.0, 0.002]]),
    ("edm_edm", "euler", "karras", 4, 5.0, 14, [1, 4, 16, 12], [["edm", "edm", 80.0, 0.002]]),
    ("edm_v", "euler", "normal", 4, 5.0, 15, [1, 4, 16, 12], [["edm", "v_prediction", 120.0, 0.002]]),
    ("cont_v", "euler", "normal", 4, 5.0, 16, [1, 4, 16, 12], [["cont_v", 500.0, 0.03]]),
    ("stack", "euler", "normal", 4, 5.0, 17, [1, 4, 16, 12],
     [["freeu", 1.1, 1.2, 0.9, 0.2], ["sag", 0.5, 2.0], ["rescale", 0.5], ["pag", 1.5]]),
    ("perpneg_guider", "euler", "normal", 4, 6.0, 18, [1, 4, 16, 12], [["perpneg_guider", 1.5]]),
    ("perpneg_guider0", "euler", "normal", 3, 1.0, 19, [1, 4, 16, 12], [["perpneg_guider", 0.0]]),
]
CTX = 32


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


def patch(model, patches, empty):
    for p in patches:
        k = p[0]
        if k == "freeu":
            model = FreeU().patch(model, *p[1:])[0]
        elif k == "freeu_v2":
            model = FreeU_V2().patch(model, *p[1:])[0]
        elif k == "rescale":
            model = RescaleCFG().patch(model, p[1])[0]
        elif k == "pag":
            model = result(PerturbedAttentionGuidance.execute(model, p[1]))
        elif k == "sag":
            model = result(SelfAttentionGuidance.execute(model, p[1], p[2]))
        elif k == "perpneg":
            model = result(PerpNeg.execute(model, empty, p[1]))
        elif k == "fresca":
            model = result(FreSca.execute(model, p[1], p[2], p[3]))
        elif k == "edm":
            model = ModelSamplingContinuousEDM().patch(model, p[1], p[2], p[3])[0]
        elif k == "cont_v":
            model = ModelSamplingContinuousV().patch(model, "v_prediction", p[1], p[2])[0]
        elif k != "perpneg_guider":
            raise ValueError(k)
    return model


def main(models_dir, out_path):
    path = os.path.join(models_dir, "patch_unet.safetensors")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    base = load_unet(path)
    g = torch.Generator().manual_seed(20251208)
    tensors = {
        "pos": torch.randn(1, 77, CTX, generator=g),
        "neg": torch.randn(1, 77, CTX, generator=g) * 0.7,
        "empty": torch.randn(1, 77, CTX, generator=g) * 0.3,
    }
    pos = [[tensors["pos"], {}]]
    neg = [[tensors["neg"], {}]]
    empty = [[tensors["empty"], {}]]
    runs = []
    for name, sampler, scheduler, steps, cfg, seed, shape, patches in RUNS:
        model = patch(base, patches, empty)
        latent = torch.zeros(shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        guider_patch = [p for p in patches if p[0] == "perpneg_guider"]
        with torch.no_grad():
            if guider_patch:
                guider = result(PerpNegGuider.execute(model, pos, neg, empty, cfg, guider_patch[0][1]))
                sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
                out = guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas, seed=seed, disable_pbar=True)
            else:
                out = comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, pos, neg, latent,
                                          denoise=1.0, seed=seed, disable_pbar=True)
        tensors[name + ".out"] = out.float().contiguous()
        runs.append({"name": name, "sampler": sampler, "scheduler": scheduler, "steps": steps, "cfg": cfg,
                     "seed": seed, "shape": shape, "patches": patches})
        print(name, float(out.abs().max()), flush=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path,
              metadata={"runs": json.dumps(runs), "sha256": sha,
                        "made_by": "tools/refpeer/patches_ref.py on ComfyUI 0.3.64 (refpeer kit)"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
