"""ComfyUI's diffusers -> cldm key names of SD1.5 and SDXL ControlNets, for
diffusion/controlnet's TestDiffusersKeysAgainstComfyUI.

comfy/controlnet.py load_controlnet_state_dict renames a diffusers ControlNet with
comfy.utils.unet_to_diffusers(config) plus its own controlnet_* entries. This prints
those pairs for the SD1.5 and SDXL ControlNet configurations (the block layout of
comfy/supported_models.py SD15 and SDXL), leaving out the UNet's output half (a
ControlNet has none) and transformer blocks after the first (named alike). The output
is committed gzipped as diffusion/controlnet/testdata/diffusers_keys.json.gz (facts about
ComfyUI's output, no ComfyUI code).

    cp tools/refpeer/controlnet_keys.py $REFPEER_DIR/tmp/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp/controlnet_keys.py | gzip -9n > diffusion/controlnet/testdata/diffusers_keys.json.gz
"""
import json

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import comfy.utils  # noqa: E402

CONFIGS = {
    "sd15": {"num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
             "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
             "transformer_depth_middle": 1, "zero_convs": 12},
    "sdxl": {"num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "transformer_depth_middle": 10, "zero_convs": 9},
}

out = {}
for name, cfg in CONFIGS.items():
    m = comfy.utils.unet_to_diffusers(cfg)
    # load_controlnet_state_dict's own additions, for a file that has them all.
    m["controlnet_mid_block.weight"] = "middle_block_out.0.weight"
    m["controlnet_mid_block.bias"] = "middle_block_out.0.bias"
    for i in range(cfg["zero_convs"]):
        for s in (".weight", ".bias"):
            m["controlnet_down_blocks.%d%s" % (i, s)] = "zero_convs.%d.0%s" % (i, s)
    for count in range(8):
        for s in (".weight", ".bias"):
            k = "controlnet_cond_embedding.conv_in%s" % s if count == 0 else \
                "controlnet_cond_embedding.blocks.%d%s" % (count - 1, s)
            if count == 7:
                k = "controlnet_cond_embedding.conv_out%s" % s
            m[k] = "input_hint_block.%d%s" % (count * 2, s)
    pairs = sorted([d, l] for d, l in m.items()
                   if not l.startswith(("output_blocks.", "out.")) and ".transformer_blocks." not in d.replace(".transformer_blocks.0.", "."))
    out[name] = pairs
print(json.dumps(out, separators=(",", ":")))
