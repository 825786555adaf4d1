"""ComfyUI's own LoRA results for loratest.RefCases (diffusion/lora's reference test).

For every case of DIR/cases.json (written by `go run ./tools/refpeer/lorafixtures -out DIR`)
this loads the tiny checkpoint, builds ComfyUI 0.3.64's key map for its UNet and text
encoders (comfy.lora.model_lora_keys_unet / model_lora_keys_clip over the state dicts as
ComfyUI names them: detect_unet_config for the UNet config, the family's
process_clip_state_dict for the text encoders; a Flux case is a bare transformer file,
seen as a comfy.model_base.Flux), reads each LoRA file the LoraLoader way
(load_torch_file, lora_convert.convert_lora, lora.load_lora), stacks the patches with
their strengths as ModelPatcher.add_patches does, and computes every patched weight with
comfy.lora.calculate_weight on a float32 copy, as patch_weight_to_device does. It writes
DIR/comfy_<case>.safetensors (the patched weights under ComfyUI's names) and
DIR/keymap_<case>.json (the key map: [module, key, start, length] rows).

Run inside the refpeer chroot (../shared/refpeer); the chroot sees only the kit and
$REFPEER_DIR, so DIR and this file must lie there:

    go run ./tools/refpeer/lorafixtures -out $REFPEER_DIR/tmp/lora
    cp tools/refpeer/lora_apply.py $REFPEER_DIR/tmp/lora/
    ../shared/refpeer/chroot.sh PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp/lora/lora_apply.py /refpeer/tmp/lora
    go run ./tools/refpeer/lorafixtures -expect $REFPEER_DIR/tmp/lora > diffusion/lora/testdata/comfyui_lora.json
"""
import json
import os
import sys
import types

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.lora  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.lora_convert  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.supported_models as sm  # noqa: E402
import comfy.utils  # noqa: E402

FAMILIES = {"sd1": sm.SD15, "sd2": sm.SD20, "sdxl": sm.SDXL, "sdxl_refiner": sm.SDXLRefiner}


class StateDict:
    """The two things the key-map functions ask of a model: its state dict and config."""

    def __init__(self, sd, unet_config=None):
        self.sd = sd
        self.model_config = types.SimpleNamespace(unet_config=unet_config)

    def state_dict(self):
        return self.sd


class FluxStateDict(comfy.model_base.Flux):
    """A Flux model as model_lora_keys_unet sees it (it asks isinstance(model, Flux))."""

    def __init__(self, sd, unet_config):
        torch.nn.Module.__init__(self)
        self.sd = sd
        self.model_config = types.SimpleNamespace(unet_config=unet_config)

    def state_dict(self):
        return self.sd


def run_case(d, case):
    ckpt = comfy.utils.load_torch_file(os.path.join(d, case["checkpoint"]))
    if case["family"].startswith("flux"):
        # A bare diffusion-model file, as UNETLoader reads it.
        unet_config = comfy.model_detection.detect_unet_config(ckpt, "")
        # detect_unet_config hard-codes Flux's hidden size (3072, every released Flux);
        # the tiny test model's comes from its shapes, as forgeflow reads it.
        unet_config["hidden_size"] = ckpt["img_in.weight"].shape[0]
        unet = {"diffusion_model." + k: v for k, v in ckpt.items()}
        clip = {}
        model = FluxStateDict(unet, unet_config)
    else:
        unet_config = comfy.model_detection.detect_unet_config(ckpt, "model.diffusion_model.")
        unet = {"diffusion_model." + k[len("model.diffusion_model."):]: v
                for k, v in ckpt.items() if k.startswith("model.diffusion_model.")}
        model_config = FAMILIES[case["family"]](unet_config)
        clip = model_config.process_clip_state_dict(dict(ckpt))
        clip = {k: v for k, v in clip.items() if k.startswith(("clip_l.", "clip_g.", "clip_h.", "t5xxl."))}
        model = StateDict(unet, unet_config)

    key_map = comfy.lora.model_lora_keys_unet(model, {})
    key_map = comfy.lora.model_lora_keys_clip(StateDict(clip), key_map)
    rows = []
    for module, target in key_map.items():
        if isinstance(target, str):
            rows.append([module, target, 0, 0])
        elif target[1] is None:  # (key, None, function): the whole weight
            rows.append([module, target[0], 0, 0])
        else:
            rows.append([module, target[0], target[1][1], target[1][2]])
    with open(os.path.join(d, "keymap_%s.json" % case["name"]), "w") as f:
        json.dump(sorted(rows), f)

    patches = {}
    for lf in case["loras"]:
        lora = comfy.utils.load_torch_file(os.path.join(d, lf["file"]))
        lora = comfy.lora_convert.convert_lora(lora)
        loaded = comfy.lora.load_lora(lora, key_map)
        for k, adapter in loaded.items():
            key, offset, fn = (k, None, None) if isinstance(k, str) else (k[0], k[1], k[2] if len(k) > 2 else None)
            if key in unet:
                strength = lf["strength_model"]
            elif key in clip:
                strength = lf["strength_clip"]
            else:
                continue
            patches.setdefault(key, []).append((strength, adapter, 1.0, offset, fn))
    out = {}
    for key, ps in sorted(patches.items()):
        base = unet.get(key, clip.get(key))
        w = comfy.lora.calculate_weight(ps, base.to(torch.float32).clone(), key)
        out[key] = w.to(base.dtype).contiguous()
    save_file(out, os.path.join(d, "comfy_%s.safetensors" % case["name"]))
    print("%s: %d key map entries, %d weights patched" % (case["name"], len(rows), len(out)))


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "cases.json")) as f:
        cases = json.load(f)
    for case in cases:
        run_case(d, case)


if __name__ == "__main__":
    main()
