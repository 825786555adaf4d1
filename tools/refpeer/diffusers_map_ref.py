"""ComfyUI 0.3.64's diffusers-to-original UNet key map for forgeflow's tiny test UNets
(refpeer kit). For each tiny checkpoint diffusion/sd's TestDiffusersUNetMap writes,
comfy.model_detection.detect_unet_config gives the UNet config and
comfy.utils.unet_to_diffusers the map; the pairs whose original key the checkpoint
holds are written as JSON (facts about ComfyUI's mapping, no ComfyUI code):

  diffusers_unet_map.json -> diffusion/sd/testdata/diffusers_unet_map.json

From the repository root:

    D=$REFPEER_DIR/tmp-loaders; mkdir -p $D
    go test ./diffusion/sd -run TestDiffusersUNetMap -sd.diffusersmodels $D
    cp tools/refpeer/diffusers_map_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-loaders/diffusers_map_ref.py /refpeer/tmp-loaders
    cp $D/diffusers_unet_map.json diffusion/sd/testdata/diffusers_unet_map.json
"""
import json
import os
import sys

from safetensors.torch import load_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.model_detection  # noqa: E402
import comfy.utils  # noqa: E402

PREFIX = "model.diffusion_model."


def main(d):
    out = {}
    for family in ["sd1", "sd2", "sdxl"]:
        sd = load_file(os.path.join(d, "diffusers_%s.safetensors" % family))
        cfg = comfy.model_detection.detect_unet_config(sd, PREFIX)
        m = comfy.utils.unet_to_diffusers(cfg)
        out[family] = {k: v for k, v in sorted(m.items()) if PREFIX + v in sd}
        held = sum(1 for k in sd if k.startswith(PREFIX))
        print(family, len(out[family]), "mapped of", held)
    with open(os.path.join(d, "diffusers_unet_map.json"), "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
