"""Expected GLIGEN sampling results for diffusion/sd's TestGLIGENRefpeer, made by
ComfyUI 0.3.64 itself (refpeer kit, CPU, torch 2.6).

Loads the Go test's tiny SD1.5-layout UNet (the patch reference's, float32) as
supported_models.SD15 and its tiny GLIGEN model (a fuser in each of the UNet's seven
transformer blocks, a position net for 768-wide text embeddings) with comfy.sd.load_gligen,
attaches text boxes to conditionings exactly as GLIGENTextBoxApply records them
(cond["gligen"] = ("position", model, [(pooled, h//8, w//8, y//8, x//8), ...])), with
pooled embeddings drawn here, and samples with comfy.sample.sample (KSampler's path).
Inputs and output latents go into one safetensors file, the runs and sha256(UNet file
bytes + GLIGEN file bytes) as metadata.

From the repository root:

    D=$REFPEER_DIR/tmp-vision; mkdir -p $D
    go test ./diffusion/sd -run TestWriteGLIGENModel -sd.gligenmodel $D
    cp tools/refpeer/gligen_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-vision/gligen_ref.py /refpeer/tmp-vision /refpeer/tmp-vision/gligen_refpeer.safetensors
    cp $D/gligen_refpeer.safetensors diffusion/sd/testdata/
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
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
CTX = 32


def box(pooled, h, w, y, x):
    return {"pooled": pooled, "Height": h, "Width": w, "Y": y, "X": x}


# name, seed, cfg, steps, latent shape, positive entries, negative entries; an entry is
# {"cond": tensor name, "area": [h, w, y, x] (latent units) or absent, "boxes": [...]}
RUNS = [
    ("one", 21, 5.0, 4, [1, 4, 16, 12],
     [{"cond": "pos", "boxes": [box("b0", 8, 6, 2, 3)]}], [{"cond": "neg", "boxes": []}]),
    ("three", 22, 6.0, 4, [2, 4, 16, 16],
     [{"cond": "pos", "boxes": [box("b0", 8, 8, 0, 0), box("b1", 4, 12, 10, 2), box("b2", 16, 16, 0, 0)]}],
     [{"cond": "neg", "boxes": []}]),
    ("area", 23, 5.0, 3, [1, 4, 16, 16],
     [{"cond": "pos", "boxes": [box("b0", 6, 6, 1, 1)]},
      {"cond": "pos2", "area": [8, 12, 8, 4], "boxes": [box("b1", 4, 4, 2, 2)]}],
     [{"cond": "neg", "boxes": []}]),
    ("neg_grounded", 24, 4.0, 3, [1, 4, 12, 12],
     [{"cond": "pos", "boxes": [box("b0", 6, 6, 0, 0)]}], [{"cond": "neg", "boxes": [box("b2", 6, 6, 3, 3)]}]),
]


def main(d, out_path):
    unet_path = os.path.join(d, "patch_unet.safetensors")
    gligen_path = os.path.join(d, "gligen_tiny.safetensors")
    h = hashlib.sha256()
    for p in (unet_path, gligen_path):
        with open(p, "rb") as f:
            h.update(f.read())
    sd = load_file(unet_path)
    cfg = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
    mc = comfy.supported_models.SD15(cfg)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "model.diffusion_model.")
    model.load_model_weights(sd, "model.diffusion_model.")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)
    gligen = comfy.sd.load_gligen(gligen_path)

    g = torch.Generator().manual_seed(20251209)
    tensors = {
        "pos": torch.randn(1, 77, CTX, generator=g),
        "pos2": torch.randn(1, 77, CTX, generator=g) * 0.8,
        "neg": torch.randn(1, 77, CTX, generator=g) * 0.7,
    }
    for i in range(3):
        tensors["b%d" % i] = torch.randn(1, 768, generator=g)

    def build(entries):
        out = []
        for e in entries:
            opts = {}
            if "area" in e:
                opts["area"] = tuple(e["area"])
            if e["boxes"]:
                params = [(tensors[b["pooled"]], b["Height"], b["Width"], b["Y"], b["X"]) for b in e["boxes"]]
                opts["gligen"] = ("position", gligen, params)
            out.append([tensors[e["cond"]], opts])
        return out

    runs = []
    for name, seed, cfg_scale, steps, shape, pos, neg in RUNS:
        latent = torch.zeros(shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        with torch.no_grad():
            out = comfy.sample.sample(patcher, noise, steps, cfg_scale, "euler", "normal", build(pos), build(neg),
                                      latent, denoise=1.0, seed=seed, disable_pbar=True)
        tensors[name + ".out"] = out.float().contiguous()
        runs.append({"name": name, "seed": seed, "cfg": cfg_scale, "steps": steps, "shape": shape,
                     "pos": pos, "neg": neg})
        print(name, float(out.abs().max()), flush=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path,
              metadata={"runs": json.dumps(runs), "sha256": h.hexdigest(),
                        "made_by": "tools/refpeer/gligen_ref.py on ComfyUI 0.3.64 (refpeer kit)"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
