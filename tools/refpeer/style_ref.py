"""Expected StyleModelApply results for nodes/builtin's TestStyleModelRefpeer, made by
ComfyUI 0.3.64 itself (refpeer kit, CPU, torch 2.6).

The Go test writes the tiny models under a models folder: clip_vision/cv_l.safetensors
and cv_siglip.safetensors (the towers of tools/refpeer/clipvision_ref.py),
style_models/t2i_style.safetensors (T2I-Adapter style model: width 64, 2 layers,
8 tokens, 32-wide context) and redux.safetensors (Flux Redux's encoder, 64 → 144 → 48),
and diffusion_models/patch_unet.safetensors (the patch reference's UNet, 32-wide
context). This script loads them with ComfyUI's own classes (ClipVisionModel from a
JSON config of the towers' sizes, comfy.t2i_adapter.adapter.StyleAdapter and
comfy.ldm.flux.redux.ReduxImageEncoder at these sizes wrapped in comfy.sd.StyleModel —
load_style_model fixes full-size widths — and the UNet as supported_models.SD15), runs
nodes.StyleModelApply (multiply, attn_bias with its attention mask, two in a row) and
samples the styled conditioning with comfy.sample.sample. Inputs and outputs go into
one safetensors file, the models' sha256 as metadata.

From the repository root:

    D=$REFPEER_DIR/tmp-vision; mkdir -p $D
    go test ./nodes/builtin -run TestWriteVisionModels -builtin.visionmodels $D
    cp tools/refpeer/style_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-vision/style_ref.py /refpeer/tmp-vision/models /refpeer/tmp-vision/style_refpeer.safetensors
    cp $D/style_refpeer.safetensors nodes/builtin/testdata/
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
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
from comfy.ldm.flux.redux import ReduxImageEncoder  # noqa: E402
from comfy.t2i_adapter.adapter import StyleAdapter  # noqa: E402
import nodes  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
VISION = {
    "cv_l": dict(hidden_act="quick_gelu", hidden_size=64, image_size=32, intermediate_size=128, num_hidden_layers=3,
                 patch_size=4, projection_dim=48, model_type="clip_vision_model"),
    "cv_siglip": dict(hidden_act="gelu_pytorch_tanh", hidden_size=64, image_size=24, intermediate_size=96,
                      num_hidden_layers=3, patch_size=4, model_type="siglip_vision_model",
                      image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
}
FILES = ["clip_vision/cv_l.safetensors", "clip_vision/cv_siglip.safetensors", "style_models/t2i_style.safetensors",
         "style_models/redux.safetensors", "diffusion_models/patch_unet.safetensors"]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def vision(d, name):
    cfg = dict(VISION[name], num_attention_heads=16, num_channels=3, layer_norm_eps=1e-5)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    model = comfy.clip_vision.ClipVisionModel(f.name)
    os.unlink(f.name)
    missing, unexpected = model.load_sd(comfy.utils.load_torch_file(os.path.join(d, "clip_vision", name + ".safetensors")))
    assert not missing and not unexpected
    return model


def style(d, name, model):
    model.load_state_dict(comfy.utils.load_torch_file(os.path.join(d, "style_models", name)))
    return comfy.sd.StyleModel(model)


def main(d, out_path):
    g = torch.Generator().manual_seed(20251211)
    t = {
        "img": torch.rand(1, 40, 56, 3, generator=g),
        "txt": torch.randn(1, 77, 32, generator=g),
        "neg": torch.randn(1, 77, 32, generator=g) * 0.5,
        "t5": torch.randn(1, 20, 48, generator=g),
    }
    cv_l, cv_s = vision(d, "cv_l"), vision(d, "cv_siglip")
    out_l = cv_l.encode_image(t["img"], crop=True)
    out_s = cv_s.encode_image(t["img"], crop=True)
    t2i = style(d, "t2i_style.safetensors", StyleAdapter(width=64, context_dim=32, num_head=8, n_layes=2, num_token=8))
    redux = style(d, "redux.safetensors", ReduxImageEncoder(redux_dim=64, txt_in_features=48))
    apply = nodes.StyleModelApply().apply_stylemodel
    with torch.no_grad():
        cases = {
            "t2i_multiply": apply([[t["txt"], {}]], t2i, out_l, 0.7, "multiply")[0],
            "t2i_bias": apply([[t["txt"], {}]], t2i, out_l, 0.5, "attn_bias")[0],
            "redux": apply([[t["t5"], {}]], redux, out_s, 1.0, "multiply")[0],
        }
        cases["chain"] = apply(cases["t2i_bias"], t2i, out_l, 1.2, "multiply")[0]
    for name, c in cases.items():
        t[name + ".cond"] = c[0][0].float().contiguous()
        if "attention_mask" in c[0][1]:
            t[name + ".mask"] = c[0][1]["attention_mask"].float().contiguous()

    sd = comfy.utils.load_torch_file(os.path.join(d, "diffusion_models/patch_unet.safetensors"))
    mc = comfy.supported_models.SD15(comfy.model_detection.detect_unet_config(sd, "model.diffusion_model."))
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "model.diffusion_model.")
    model.load_model_weights(sd, "model.diffusion_model.")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)
    latent = torch.zeros(1, 4, 16, 12)
    with torch.no_grad():
        t["sample"] = comfy.sample.sample(patcher, comfy.sample.prepare_noise(latent, 21), 4, 5.0, "euler", "normal",
                                          cases["t2i_multiply"], [[t["neg"], {}]], latent, denoise=1.0, seed=21,
                                          disable_pbar=True).float().contiguous()
    save_file(t, out_path, metadata={"sha256": json.dumps({f: sha(os.path.join(d, f)) for f in FILES}),
                                     "made_by": "tools/refpeer/style_ref.py on ComfyUI 0.3.64 (refpeer kit)"})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
