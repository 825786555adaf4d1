"""Expected CLIP vision outputs for diffusion/clipvision's TestRefpeer, made by ComfyUI
0.3.64 itself (refpeer kit, CPU, torch 2.6).

The Go test writes three tiny towers with random weights and real key names:
cv_l.safetensors (transformers layout, quick_gelu, 3 layers), cv_h.safetensors
(OpenCLIP's "visual." layout, 31 layers so that ComfyUI's ViT-H rule gives gelu) and
cv_siglip.safetensors (SigLIP: no class token, patch bias, float16). This script loads
each as comfy/clip_vision.py does (load_torch_file, convert_to_transformers for the
OpenCLIP one) into comfy.clip_vision.ClipVisionModel built from a JSON config with the
file's sizes (the shipped configs fix full-size widths; 16 heads as in all of them),
and runs ClipVisionModel.encode_image (clip_preprocess + CLIPVisionModelProjection,
float16 weights as on any ComfyUI device) on images drawn here with a fixed seed, with
crop center and none. Inputs and outputs go into one safetensors file, the cases and
the models' sha256 as metadata.

From the repository root:

    D=$REFPEER_DIR/tmp-vision; mkdir -p $D
    go test ./diffusion/clipvision -run TestWriteRefModels -clipvision.models $D
    cp tools/refpeer/clipvision_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-vision/clipvision_ref.py /refpeer/tmp-vision /refpeer/tmp-vision/clipvision_refpeer.safetensors
    cp $D/clipvision_refpeer.safetensors diffusion/clipvision/testdata/refpeer.safetensors
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
import comfy.utils  # noqa: E402

torch.set_num_threads(1)

MODELS = {
    # name: (file, openclip prefix or None, config)
    "cv_l": ("cv_l.safetensors", None, dict(hidden_act="quick_gelu", hidden_size=64, image_size=32, intermediate_size=128,
                                             num_hidden_layers=3, patch_size=4, projection_dim=48, model_type="clip_vision_model")),
    "cv_h": ("cv_h.safetensors", "visual.", dict(hidden_act="gelu", hidden_size=32, image_size=32, intermediate_size=64,
                                                 num_hidden_layers=31, patch_size=8, projection_dim=24, model_type="clip_vision_model")),
    "cv_siglip": ("cv_siglip.safetensors", None, dict(hidden_act="gelu_pytorch_tanh", hidden_size=64, image_size=24, intermediate_size=96,
                                                      num_hidden_layers=3, patch_size=4, model_type="siglip_vision_model",
                                                      image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])),
}


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(d, name):
    path, prefix, cfg = MODELS[name]
    cfg = dict(cfg, num_attention_heads=16, num_channels=3, layer_norm_eps=1e-5)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    model = comfy.clip_vision.ClipVisionModel(f.name)
    os.unlink(f.name)
    sd = comfy.utils.load_torch_file(os.path.join(d, path))
    if prefix:
        sd = comfy.clip_vision.convert_to_transformers(sd, prefix)
    missing, unexpected = model.load_sd(sd)
    assert not missing and not unexpected, (len(missing), missing[:3], len(unexpected), unexpected[:3])
    return model


def main(d, out_path):
    g = torch.Generator().manual_seed(20251209)
    images = {
        "wide": torch.rand(1, 40, 56, 3, generator=g),
        "square_alpha": torch.rand(2, 32, 32, 4, generator=g),
        "small": torch.rand(1, 20, 16, 3, generator=g),
        "tall": torch.rand(1, 61, 23, 3, generator=g),
    }
    tensors = {"img." + k: v for k, v in images.items()}
    # (model, image, crop, encode): every image and crop is preprocessed for the ViT-L-like
    # tower; the towers' outputs are kept for a few cases (the fixture stays small).
    plan = [("cv_l", img, crop, (img, crop) in (("wide", "center"), ("square_alpha", "none")))
            for img in images for crop in ("center", "none")]
    plan += [("cv_h", "wide", "center", True), ("cv_h", "tall", "none", True),
             ("cv_siglip", "wide", "center", True), ("cv_siglip", "small", "none", True)]
    cases = []
    models = {name: load(d, name) for name in MODELS}
    for name, img, crop, encode in plan:
        model = models[name]
        key = f"{name}.{img}.{crop}"
        with torch.no_grad():
            px = comfy.clip_vision.clip_preprocess(images[img], size=model.image_size, mean=model.image_mean,
                                                   std=model.image_std, crop=crop == "center")
            tensors[key + ".pixels"] = px.float().contiguous()
            if encode:
                out = model.encode_image(images[img], crop=crop == "center")
                tensors[key + ".last"] = out["last_hidden_state"].float().clone().contiguous()
                tensors[key + ".penultimate"] = out["penultimate_hidden_states"].float().clone().contiguous()
                tensors[key + ".embeds"] = out["image_embeds"].float().clone().contiguous()
        cases.append({"model": name, "image": img, "crop": crop, "encode": encode})
    meta = {"cases": json.dumps(cases), "sha256": json.dumps({n: sha(os.path.join(d, MODELS[n][0])) for n in MODELS}),
            "made_by": "tools/refpeer/clipvision_ref.py on ComfyUI 0.3.64 (refpeer kit)"}
    save_file(tensors, out_path, metadata=meta)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
