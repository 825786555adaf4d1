"""Expected SD3 sampling results for diffusion/sd's TestSD3SampleRefpeer, made by ComfyUI
itself.

Loads the Go test's tiny SD3 MMDiT file as UNETLoader does
(comfy.sd.load_diffusion_model_state_dict: supported_models.SD3, discrete flow with
shift 3, the SD3 latent format), optionally patches it with ModelSamplingSD3 /
SkipLayerGuidanceDiT / SkipLayerGuidanceDiTSimple / CFGNorm (ComfyUI's own node
classes), and samples with nodes.common_ksampler (KSampler) on conditionings drawn here
with fixed torch seeds. Inputs and output latents go into one safetensors file, the runs
and the model's sha256 as metadata (facts about ComfyUI's output, no ComfyUI code).

From the repository root, with the refpeer kit (../shared/refpeer/README.md):

    D=$REFPEER_DIR/tmp-sd3; mkdir -p $D
    go test ./diffusion/sd -run TestWriteSD3SampleModel -sd.samplemodel $D
    cp tools/refpeer/sd3_sample_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-sd3/sd3_sample_ref.py /refpeer/tmp-sd3 /refpeer/tmp-sd3/sd3_sample_refpeer.safetensors
    cp $D/sd3_sample_refpeer.safetensors diffusion/sd/testdata/
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

import comfy.sd  # noqa: E402
import nodes  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402
from comfy_extras.nodes_slg import SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple  # noqa: E402
from comfy_extras.nodes_cfg import CFGNorm  # noqa: E402

# name, sampler, scheduler, steps, cfg, denoise, seed, latent (zeros|random), negative
# form (plain|sd3: the SD3 example's zeroed negative after 10 %), patches
RUNS = [
    ("euler_sgm", "euler", "sgm_uniform", 4, 4.5, 1.0, 5, "zeros", "plain", []),
    ("dpmpp2m_sd3neg", "dpmpp_2m", "simple", 3, 4.0, 1.0, 6, "zeros", "sd3", []),
    ("img2img", "euler", "normal", 4, 3.0, 0.6, 7, "random", "plain", []),
    ("shift6", "euler", "simple", 3, 5.0, 1.0, 8, "zeros", "plain", [("shift", 6.0)]),
    ("slg", "euler", "simple", 3, 4.0, 1.0, 9, "zeros", "plain", [("slg", "1", 2.5, 0.0, 1.0, 0.5)]),
    ("slg_simple", "euler", "simple", 3, 4.0, 1.0, 10, "zeros", "plain", [("slg_simple", "0, 1", 0.0, 1.0)]),
    ("cfgnorm", "euler", "simple", 3, 6.0, 1.0, 11, "zeros", "plain", [("cfgnorm", 0.9)]),
    ("ancestral", "euler_ancestral", "simple", 3, 4.0, 1.0, 12, "zeros", "plain", []),
]
SHAPE = (1, 16, 8, 10)
TOKENS, CTX, ADM = 7, 64, 32


def result(out):
    return out.result[0] if hasattr(out, "result") else out[0]


def patch(model, patches):
    for p in patches:
        if p[0] == "shift":
            model = ModelSamplingSD3().patch(model, p[1])[0]
        elif p[0] == "slg":
            model = result(SkipLayerGuidanceDiT.execute(model, scale=p[2], start_percent=p[3], end_percent=p[4],
                                                        double_layers=p[1], single_layers="", rescaling_scale=p[5]))
        elif p[0] == "slg_simple":
            model = result(SkipLayerGuidanceDiTSimple.execute(model, start_percent=p[2], end_percent=p[3],
                                                              double_layers=p[1], single_layers=""))
        elif p[0] == "cfgnorm":
            model = result(CFGNorm.execute(model, p[1]))
    return model


def main(models_dir, out_path):
    path = os.path.join(models_dir, "sd3_sample_mmdit.safetensors")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    base = comfy.sd.load_diffusion_model_state_dict(load_file(path))
    tensors, runs = {}, []
    for name, sampler, scheduler, steps, cfg, denoise, seed, latent, negform, patches in RUNS:
        torch.manual_seed(seed)
        pc, pp = torch.randn(1, TOKENS, CTX), torch.randn(1, ADM)
        nc, np_ = torch.randn(1, TOKENS - 2, CTX), torch.randn(1, ADM)
        lat = torch.zeros(SHAPE) if latent == "zeros" else torch.randn(SHAPE)
        positive = [[pc, {"pooled_output": pp}]]
        if negform == "sd3":
            negative = [[nc, {"pooled_output": np_, "start_percent": 0.0, "end_percent": 0.1}],
                        [torch.zeros_like(nc), {"pooled_output": torch.zeros_like(np_), "start_percent": 0.1, "end_percent": 1.0}]]
        else:
            negative = [[nc, {"pooled_output": np_}]]
        model = patch(base, patches)
        out = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                    {"samples": lat}, denoise=denoise)[0]["samples"]
        for k, v in {"pos": pc, "pos_pooled": pp, "neg": nc, "neg_pooled": np_, "latent": lat, "out": out}.items():
            tensors[name + "." + k] = v.float().contiguous()
        runs.append({"name": name, "sampler": sampler, "scheduler": scheduler, "steps": steps, "cfg": cfg,
                     "denoise": denoise, "seed": seed, "negative": negform,
                     "patches": [list(p) for p in patches]})
    save_file(tensors, out_path, metadata={
        "runs": json.dumps(runs), "sha256": sha,
        "made_by": "tools/refpeer/sd3_sample_ref.py, ComfyUI 0.3.64 (a125cd84) on CPU, torch " + torch.__version__,
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
