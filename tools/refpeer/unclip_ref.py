"""Expected SD2.1 unCLIP sampling results for diffusion/sd's TestUnCLIPRefpeer, made by
ComfyUI 0.3.64 itself (refpeer kit, CPU, torch 2.6).

Loads the Go test's tiny unCLIP checkpoint (SD2 layout with a 64-wide label vector, an
OpenCLIP vision tower under "embedder.model.visual.", random float32 weights) with
ComfyUI's own classes: supported_models.SD21UnclipH with the detected unet_config and
a noise_aug_config whose timestep_dim is the tiny embedding width (model_base.SD21UNCLIP,
CLIPEmbeddingNoiseAugmentation), and the vision tower through
clip_vision.convert_to_transformers into a ClipVisionModel built from a JSON config of
the tower's sizes (the shipped configs fix full-size widths). Images are encoded with
encode_image (crop center), attached with nodes.unCLIPConditioning and sampled with
comfy.sample.sample (KSampler's path) on text conditionings drawn here with fixed seeds.
Inputs and output latents go into one safetensors file, the runs and the model's sha256
as metadata.

From the repository root:

    D=$REFPEER_DIR/tmp-vision; mkdir -p $D
    go test ./diffusion/sd -run TestWriteUnCLIPModel -sd.unclipmodel $D
    cp tools/refpeer/unclip_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-vision/unclip_ref.py /refpeer/tmp-vision /refpeer/tmp-vision/unclip_refpeer.safetensors
    cp $D/unclip_refpeer.safetensors diffusion/sd/testdata/
"""
import hashlib
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import save_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.clip_vision  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
import nodes  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
PREFIX = "model.diffusion_model."
VISION = "embedder.model.visual."
EMBED = 32

# name, seed, positive unCLIP list [(image, strength, noise_augmentation)], negative list
RUNS = [
    ("single", 42, [("one", 1.0, 0.0)], []),
    ("aug", 3, [("one", 0.8, 0.35)], []),
    ("two", 7, [("one", 1.0, 0.1), ("one", 0.5, 0.2)], []),
    ("batch", 11, [("pair", 1.0, 0.0)], []),
    ("both", 5, [("one", 1.2, 0.05)], [("pair", -0.5, 0.5)]),
]


def main(d, out_path):
    path = os.path.join(d, "unclip_tiny.safetensors")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    sd = comfy.utils.load_torch_file(path)
    cfg = comfy.model_detection.detect_unet_config(sd, PREFIX)
    mc = comfy.supported_models.SD21UnclipH(cfg)
    mc.noise_aug_config = {"noise_schedule_config": {"timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
                           "timestep_dim": EMBED}
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, PREFIX)
    model.load_model_weights(sd, PREFIX)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)

    vcfg = dict(hidden_act="quick_gelu", hidden_size=32, image_size=32, intermediate_size=64, num_hidden_layers=2,
                patch_size=8, projection_dim=EMBED, model_type="clip_vision_model", num_attention_heads=16,
                num_channels=3, layer_norm_eps=1e-5)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(vcfg, f)
    cv = comfy.clip_vision.ClipVisionModel(f.name)
    os.unlink(f.name)
    vsd = comfy.clip_vision.convert_to_transformers({k: v for k, v in sd.items() if k.startswith(VISION)}, VISION)
    missing, unexpected = cv.load_sd(vsd)
    assert not missing and not unexpected, (len(missing), missing[:3], len(unexpected), unexpected[:3])

    g = torch.Generator().manual_seed(20251210)
    tensors = {
        "pos": torch.randn(1, 77, 64, generator=g),
        "neg": torch.randn(1, 77, 64, generator=g) * 0.5,
        "img.one": torch.rand(1, 40, 48, 3, generator=g),
        "img.pair": torch.rand(2, 32, 32, 3, generator=g),
    }
    encoded = {k: cv.encode_image(tensors["img." + k], crop=True) for k in ("one", "pair")}
    for k, v in encoded.items():
        tensors["embeds." + k] = v["image_embeds"].float().clone().contiguous()

    def cond(base, unclips):
        c = [[base, {}]]
        for img, strength, aug in unclips:
            c = nodes.unCLIPConditioning().apply_adm(c, encoded[img], strength, aug)[0]
        return c

    runs = []
    for name, seed, pos_u, neg_u in RUNS:
        latent = torch.zeros(1, 4, 8, 8)
        noise = comfy.sample.prepare_noise(latent, seed)
        with torch.no_grad():
            out = comfy.sample.sample(patcher, noise, 3, 5.0, "euler", "normal", cond(tensors["pos"], pos_u),
                                      cond(tensors["neg"], neg_u), latent, denoise=1.0, seed=seed, disable_pbar=True)
        tensors[name + ".out"] = out.float().contiguous()
        runs.append({"name": name, "seed": seed, "pos": pos_u, "neg": neg_u})
        print(name, float(out.abs().max()), flush=True)
    save_file(tensors, out_path, metadata={"runs": json.dumps(runs), "sha256": sha,
                                           "prediction": model.model_type.name,
                                           "made_by": "tools/refpeer/unclip_ref.py on ComfyUI 0.3.64 (refpeer kit)"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
