"""Expected results for diffusion/sd's TestCondGuideRefpeer and TestGuidancePatchesRefpeer,
made by ComfyUI 0.3.64 itself (refpeer kit, CPU, torch 2.6).

Two parts, one safetensors file (inputs and outputs as tensors, the cases as JSON
metadata; facts about ComfyUI's output, no ComfyUI code):

- "fn" cases: the guidance patch functions of ComfyUI's own nodes (CFGZeroStar, APG,
  TCFG, Mahiro, Epsilon Scaling), taken from the patched model's model_options and
  called on small random tensors (APG several times in a row, its running average
  reset by a rising sigma);
- "sd3" cases: the same nodes and nodes.common_ksampler on the tiny SD3 MMDiT of
  TestSD3SampleRefpeer (16-channel latents, pooled vectors, odd region sizes padded to
  the patch size by the model) and, as "flux" cases, on the tiny Flux (guidance
  distilled) of diffusion/sd's Flux tests, its configuration narrowed to the tiny sizes
  as tools/refpeer/flux_scaled_ref.py does;
- "run" cases: comfy.sample.sample (KSampler's path) on the tiny UNet of
  TestPatchesRefpeer (TinyPatchUNet, seed 61) with conditionings built by ComfyUI's
  own nodes (ConditioningSetMask default / mask bounds, ConditioningSetAreaPercentage,
  ConditioningSetAreaStrength, ConditioningSetArea, ConditioningCombine) and models
  patched by the guidance nodes. One euler step at cfg 1 from pure noise returns the
  positive list's calc_cond_batch output itself.

From the repository root:

    D=$REFPEER_DIR/tmp-condguide; mkdir -p $D
    go test ./diffusion/sd -run TestWritePatchModel -sd.patchmodel $D
    go test ./diffusion/sd -run TestWriteSD3SampleModel -sd.samplemodel $D
    go test ./diffusion/sd -run TestWriteFluxCondModel -sd.fluxcondmodel $D
    cp tools/refpeer/condguide_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-condguide/condguide_ref.py /refpeer/tmp-condguide /refpeer/tmp-condguide/condguide_refpeer.safetensors
    cp $D/condguide_refpeer.safetensors diffusion/sd/testdata/
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
import comfy.sd  # noqa: E402

TINY_FLUX = dict(hidden_size=256, num_heads=2, context_in_dim=64, vec_in_dim=32, depth=1, depth_single_blocks=1)
_detect = comfy.model_detection.detect_unet_config


def tiny_config(sd, prefix, metadata=None):
    c = _detect(sd, prefix, metadata=metadata)
    if c.get("image_model") == "flux":
        c.update(TINY_FLUX)
    return c


comfy.model_detection.detect_unet_config = tiny_config
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
import nodes  # noqa: E402
from comfy_extras.nodes_cfg import CFGZeroStar  # noqa: E402
from comfy_extras.nodes_apg import APG  # noqa: E402
from comfy_extras.nodes_tcfg import TCFG  # noqa: E402
from comfy_extras.nodes_mahiro import Mahiro  # noqa: E402
from comfy_extras.nodes_eps import EpsilonScaling  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
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


def patch(model, patches):
    for p in patches:
        k = p[0]
        if k == "cfgzero":
            model = result(CFGZeroStar.execute(model))
        elif k == "apg":
            model = result(APG.execute(model, p[1], p[2], p[3]))
        elif k == "tcfg":
            model = result(TCFG.execute(model))
        elif k == "mahiro":
            model = result(Mahiro.execute(model))
        elif k == "eps":
            model = result(EpsilonScaling.execute(model, p[1]))
        else:
            raise ValueError(k)
    return model


def build_cond(entries, tensors):
    """entries: [{"ctx": name, "ops": [...]}]; ops applied in order with ComfyUI's nodes."""
    out = []
    for e in entries:
        c = [[tensors[e["ctx"]], {"pooled_output": tensors[e["pooled"]]} if "pooled" in e else {}]]
        for op in e["ops"]:
            k = op[0]
            if k == "mask":
                c = nodes.ConditioningSetMask().append(c, tensors[op[1]], op[3], op[2])[0]
            elif k == "area_pct":
                c = nodes.ConditioningSetAreaPercentage().append(c, op[1], op[2], op[3], op[4], op[5])[0]
            elif k == "strength":
                c = nodes.ConditioningSetAreaStrength().append(c, op[1])[0]
            elif k == "area":
                c = nodes.ConditioningSetArea().append(c, op[1], op[2], op[3], op[4], op[5])[0]
            else:
                raise ValueError(k)
        out = nodes.ConditioningCombine().combine(out, c)[0] if out else c
    return out


# name, steps, cfg, seed, latent shape, positive entries, negative entries, patches
P, N, Q = "pos", "neg", "alt"
RUNS = [
    ("mask_step_cfg1", 1, 1.0, 3, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_a", 1.3, "default"], ["strength", 0.8]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_step_cfg5", 1, 5.0, 4, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_a", 1.3, "default"]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_only", 4, 5.0, 5, [1, 4, 16, 12],
     [{"ctx": Q, "ops": [["mask", "mask_box", 1.0, "default"]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_bounds", 4, 5.0, 6, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_box", 0.9, "mask bounds"]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_bounds_step", 1, 1.0, 7, [1, 4, 24, 20],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_box", 1.1, "mask bounds"], ["strength", 1.4]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_empty_bounds", 1, 5.0, 8, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_zero", 1.0, "mask bounds"]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_batch", 3, 5.0, 9, [2, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_b2", 1.0, "default"]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_batch1_latent2", 1, 5.0, 10, [2, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_a", 0.7, "default"]]}],
     [{"ctx": N, "ops": [["mask", "mask_a", 0.5, "default"]]}], []),
    ("mask_in_area", 1, 5.0, 11, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["area", 64, 80, 16, 8, 1.0], ["mask", "mask_a", 1.2, "default"]]}],
     [{"ctx": N, "ops": []}], []),
    ("pct_step_cfg1", 1, 1.0, 12, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["area_pct", 0.5, 0.6, 0.25, 0.1, 1.5]]}],
     [{"ctx": N, "ops": []}], []),
    ("pct", 4, 5.0, 13, [1, 4, 20, 16],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["area_pct", 0.55, 0.35, 0.45, 0.65, 1.2]]}],
     [{"ctx": N, "ops": []}], []),
    ("pct_then_mask_bounds", 1, 5.0, 14, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["area_pct", 0.5, 0.5, 0.0, 0.0, 1.0], ["mask", "mask_box", 1.0, "mask bounds"]]}],
     [{"ctx": N, "ops": []}], []),
    ("mask_bounds_then_pct", 1, 5.0, 15, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_box", 1.0, "mask bounds"], ["area_pct", 0.5, 0.5, 0.5, 0.5, 1.0]]}],
     [{"ctx": N, "ops": []}], []),
    ("strength", 3, 5.0, 16, [1, 4, 16, 12],
     [{"ctx": P, "ops": [["strength", 0.6]]}, {"ctx": Q, "ops": [["area", 64, 72, 8, 0, 1.0], ["strength", 2.5]]}],
     [{"ctx": N, "ops": [["strength", 1.7]]}], []),
    ("cfgzero", 4, 5.0, 17, [2, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["cfgzero"]]),
    ("cfgzero_cfg1", 3, 1.0, 18, [1, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["cfgzero"]]),
    ("apg", 4, 5.0, 19, [2, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["apg", 0.5, 2.0, 0.0]]),
    ("apg_momentum", 5, 6.0, 20, [1, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["apg", 0.2, 1.0, 0.5]]),
    ("apg_cfg1", 3, 1.0, 21, [1, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["apg", 1.0, 5.0, 0.0]]),
    ("tcfg", 4, 5.0, 22, [2, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["tcfg"]]),
    ("mahiro", 4, 5.0, 23, [2, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["mahiro"]]),
    ("eps", 4, 5.0, 24, [1, 4, 16, 12], [{"ctx": P, "ops": []}], [{"ctx": N, "ops": []}], [["eps", 1.05]]),
    ("stack_masked", 4, 5.0, 25, [1, 4, 16, 12],
     [{"ctx": P, "ops": []}, {"ctx": Q, "ops": [["mask", "mask_a", 1.0, "default"]]}], [{"ctx": N, "ops": []}],
     [["tcfg"], ["apg", 0.5, 3.0, 0.2], ["cfgzero"], ["eps", 1.01]]),
]

def s3(name, ops=()):
    return {"ctx": "s3." + name, "pooled": "s3." + name + "_pooled", "ops": list(ops)}


# name, scheduler, steps, cfg, seed, latent shape, positive, negative, patches
SD3_RUNS = [
    ("sd3_mask", "simple", 3, 4.0, 31, [1, 16, 8, 10], [s3("pos"), s3("alt", [["mask", "s3.mask", 1.2, "default"]])],
     [s3("neg")], []),
    ("sd3_bounds_pct", "simple", 3, 4.0, 32, [1, 16, 8, 10],
     [s3("pos", [["area_pct", 0.5, 0.75, 0.25, 0.0, 1.3]]), s3("alt", [["mask", "s3.box", 1.0, "mask bounds"]])],
     [s3("neg")], []),
    ("sd3_guidance", "simple", 3, 5.0, 33, [1, 16, 8, 10], [s3("pos")], [s3("neg")],
     [["apg", 0.5, 2.0, 0.3], ["tcfg"], ["mahiro"]]),
]

FLUX_RUNS = [
    ("flux_mask", "simple", 3, 2.0, 41, [1, 16, 8, 10], [s3("pos"), s3("alt", [["mask", "s3.mask", 1.2, "default"]])],
     [s3("neg")], []),
    ("flux_bounds_pct", "simple", 3, 2.0, 42, [1, 16, 8, 10],
     [s3("pos", [["area_pct", 0.5, 0.75, 0.25, 0.0, 1.3]]), s3("alt", [["mask", "s3.box", 1.0, "mask bounds"]])],
     [s3("neg")], []),
]

FN_SHAPE = [2, 3, 4, 5]


def fn_cases(base, tensors):
    g = torch.Generator().manual_seed(424242)
    cases = []

    def rnd(scale=1.0):
        return torch.randn(FN_SHAPE, generator=g) * scale

    def post(name, patches, scale, sigma):
        model = patch(base, patches)
        fn = model.model_options["sampler_post_cfg_function"][-1]
        x, c, u = rnd(3.0), rnd(), rnd(0.8)
        den = u + (c - u) * scale
        out = fn({"denoised": den, "cond": [{}], "uncond": [{}], "cond_scale": scale, "model": model.model,
                  "uncond_denoised": u, "cond_denoised": c, "sigma": torch.tensor([sigma]),
                  "model_options": model.model_options, "input": x})
        for k, v in (("x", x), ("cond", c), ("uncond", u), ("denoised", den), ("out", out)):
            tensors[f"fn.{name}.{k}"] = v.float().contiguous()
        cases.append({"name": name, "kind": "post", "patches": patches, "scale": scale, "sigmas": [sigma]})

    def pre(name, patches, scale, sigmas, uncond_none=False):
        model = patch(base, patches)
        fn = model.model_options["sampler_pre_cfg_function"][-1]
        for i, sigma in enumerate(sigmas):
            x, c, u = rnd(3.0), rnd(), rnd(0.8)
            if uncond_none:
                u = torch.zeros_like(u)
            conds = [[{}], None if uncond_none else [{}]]
            out = fn({"conds": conds, "conds_out": [c, u], "cond_scale": scale, "timestep": torch.tensor([sigma]),
                      "input": x, "sigma": torch.tensor([sigma]), "model": model.model, "model_options": model.model_options})
            for k, v in (("x", x), ("cond", c), ("uncond", u), ("out0", out[0]), ("out1", out[1])):
                tensors[f"fn.{name}.{i}.{k}"] = v.float().contiguous()
        cases.append({"name": name, "kind": "pre", "patches": patches, "scale": scale, "sigmas": sigmas,
                      "uncond_none": uncond_none})

    post("cfgzero", [["cfgzero"]], 4.5, 3.0)
    post("mahiro", [["mahiro"]], 6.0, 3.0)
    post("eps", [["eps", 1.02]], 5.0, 3.0)
    pre("apg", [["apg", 1.0, 5.0, 0.0]], 4.0, [5.0])
    pre("apg_eta", [["apg", -0.5, 0.0, 0.0]], 7.0, [5.0])
    pre("apg_momentum", [["apg", 0.3, 2.5, 0.6]], 5.5, [5.0, 3.0, 2.0, 4.0, 1.0])
    pre("apg_cfg1", [["apg", 1.0, 5.0, 0.0]], 1.0, [5.0], uncond_none=True)
    pre("tcfg", [["tcfg"]], 5.0, [3.0])
    pre("tcfg_cfg1", [["tcfg"]], 1.0, [3.0], uncond_none=True)
    return cases


def main(models_dir, out_path):
    path = os.path.join(models_dir, "patch_unet.safetensors")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    base = load_unet(path)
    g = torch.Generator().manual_seed(20251207)
    tensors = {
        P: torch.randn(1, 77, CTX, generator=g),
        N: torch.randn(1, 77, CTX, generator=g) * 0.7,
        Q: torch.randn(1, 77, CTX, generator=g) * 1.2,
        # pixel-sized masks, resized to the latent by the sampler
        "mask_a": torch.rand(1, 40, 30, generator=g),
        "mask_b2": torch.rand(2, 48, 36, generator=g),
        "mask_zero": torch.zeros(1, 16, 12),
    }
    box = torch.zeros(1, 64, 48)
    box[0, 15:35, 10:22] = torch.rand(20, 12, generator=g) + 0.1
    tensors["mask_box"] = box
    fns = fn_cases(base, tensors)
    sd3_path = os.path.join(models_dir, "sd3_sample_mmdit.safetensors")
    with open(sd3_path, "rb") as f:
        sd3_sha = hashlib.sha256(f.read()).hexdigest()
    sd3 = comfy.sd.load_diffusion_model_state_dict(load_file(sd3_path))
    for k, tokens in (("pos", 7), ("alt", 7), ("neg", 5)):
        tensors["s3." + k] = torch.randn(1, tokens, 64, generator=g)
        tensors["s3." + k + "_pooled"] = torch.randn(1, 32, generator=g)
    tensors["s3.mask"] = torch.rand(1, 24, 40, generator=g)
    s3box = torch.zeros(1, 64, 80)
    s3box[0, 10:40, 30:60] = torch.rand(30, 30, generator=g) + 0.1
    tensors["s3.box"] = s3box
    flux_path = os.path.join(models_dir, "flux_cond.safetensors")
    with open(flux_path, "rb") as f:
        flux_sha = hashlib.sha256(f.read()).hexdigest()
    flux = comfy.sd.load_diffusion_model_state_dict(load_file(flux_path))
    sd3_runs = []
    for name, scheduler, steps, cfg, seed, shape, pos_e, neg_e, patches in SD3_RUNS + FLUX_RUNS:
        model = patch(flux if name.startswith("flux") else sd3, patches)
        pos, neg = build_cond(pos_e, tensors), build_cond(neg_e, tensors)
        with torch.no_grad():
            out = nodes.common_ksampler(model, seed, steps, cfg, "euler", scheduler, pos, neg,
                                        {"samples": torch.zeros(shape)}, denoise=1.0)[0]["samples"]
        tensors["sd3." + name] = out.float().contiguous()
        sd3_runs.append({"name": name, "scheduler": scheduler, "steps": steps, "cfg": cfg, "seed": seed, "shape": shape,
                         "positive": pos_e, "negative": neg_e, "patches": patches})
        print(name, float(out.abs().max()), flush=True)
    runs = []
    for name, steps, cfg, seed, shape, pos_e, neg_e, patches in RUNS:
        model = patch(base, patches)
        pos, neg = build_cond(pos_e, tensors), build_cond(neg_e, tensors)
        latent = torch.zeros(shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        with torch.no_grad():
            out = comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, latent,
                                      denoise=1.0, seed=seed, disable_pbar=True)
        tensors["run." + name] = out.float().contiguous()
        runs.append({"name": name, "steps": steps, "cfg": cfg, "seed": seed, "shape": shape,
                     "positive": pos_e, "negative": neg_e, "patches": patches})
        print(name, float(out.abs().max()), flush=True)
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, out_path,
              metadata={"runs": json.dumps(runs), "fns": json.dumps(fns), "fn_shape": json.dumps(FN_SHAPE),
                        "sd3_runs": json.dumps(sd3_runs), "sd3_sha256": sd3_sha, "flux_sha256": flux_sha,
                        "sha256": sha, "made_by": "tools/refpeer/condguide_ref.py on ComfyUI 0.3.64 (refpeer kit)"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
