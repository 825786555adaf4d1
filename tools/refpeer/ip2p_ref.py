"""Expected outputs for forgeflow's InstructPix2Pix tests, made by ComfyUI 0.3.64 itself
(refpeer kit, CPU, torch 2.6).

The tiny UNet is the one diffusion/sd's TestIP2PAgainstComfyUI writes (the inpainting
reference spec with 8 input channels, random F16 weights). This script loads it as
comfy.model_base.SD15_instructpix2pix (config from comfy.model_detection, SD1.5 latent
format), samples the cases below through comfy.sample.sample, runs the
InstructPixToPixConditioning node with a VAE stub that records the pixels it is given,
and writes inputs and outputs (facts about ComfyUI's output, no ComfyUI code) to one
safetensors files:

  out_ip2p.safetensors       -> diffusion/sd/testdata/ip2p_refpeer.safetensors
  out_ip2p_nodes.safetensors -> nodes/builtin/testdata/ip2p_refpeer.safetensors

From the repository root (the chroot sees only the kit and $REFPEER_DIR):

    D=$REFPEER_DIR/tmp-loaders; mkdir -p $D
    go test ./diffusion/sd -run TestIP2PAgainstComfyUI -sd.ip2pmodel $D
    cp tools/refpeer/ip2p_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-loaders/ip2p_ref.py /refpeer/tmp-loaders
    cp $D/out_ip2p.safetensors diffusion/sd/testdata/ip2p_refpeer.safetensors
    cp $D/out_ip2p_nodes.safetensors nodes/builtin/testdata/ip2p_refpeer.safetensors
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

import comfy.latent_formats  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models_base  # noqa: E402
from comfy_extras.nodes_ip2p import InstructPixToPixConditioning  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
SAMPLER = dict(steps=4, cfg=4.0, sampler_name="euler", scheduler="normal", seed=7)
PREFIX = "model.diffusion_model."


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_ip2p(path):
    sd = load_file(path)
    cfg = comfy.model_detection.detect_unet_config(sd, PREFIX)
    mc = comfy.supported_models_base.BASE(cfg)
    mc.latent_format = comfy.latent_formats.SD15()
    mc.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SD15_instructpix2pix(mc, device=CPU)
    model.load_model_weights(sd, PREFIX)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def sample(patcher, positive, negative, latent):
    noise = comfy.sample.prepare_noise(latent, SAMPLER["seed"])
    out = comfy.sample.sample(patcher, noise, SAMPLER["steps"], SAMPLER["cfg"], SAMPLER["sampler_name"],
                              SAMPLER["scheduler"], positive, negative, latent, denoise=1.0,
                              seed=SAMPLER["seed"], disable_pbar=True)
    return out.float().contiguous()


class StubVAE:
    """Records the pixels InstructPixToPixConditioning encodes; returns a fixed latent."""

    def __init__(self):
        self.seen = []

    def encode(self, pixels):
        self.seen.append(pixels.clone())
        n, h, w = pixels.shape[0], pixels.shape[1] // 8, pixels.shape[2] // 8
        return torch.arange(n * 4 * h * w, dtype=torch.float32).reshape(n, 4, h, w) / 100


def main(d):
    model_file = "unet_ip2p.safetensors"
    sums = {model_file: sha(os.path.join(d, model_file))}
    unet = load_ip2p(os.path.join(d, model_file))

    g = torch.Generator().manual_seed(20261207)
    inp = {
        "pos": torch.randn(1, 77, 32, generator=g),
        "neg": torch.randn(1, 77, 32, generator=g) * 0.5,
        "concat": torch.randn(1, 4, 8, 8, generator=g) * 3,
        "concat_odd": torch.randn(1, 4, 6, 11, generator=g) * 3,
        "latent2": torch.randn(2, 4, 8, 8, generator=g),
        "pixels": torch.rand(2, 21, 30, 3, generator=g),
    }
    zeros = torch.zeros(1, 4, 8, 8)

    def cond(key=None):
        extra = {} if key is None else {"concat_latent_image": inp[key]}
        return [[inp["pos"], dict(extra)]], [[inp["neg"], dict(extra)]]

    out = {}
    p, n = cond("concat")
    out["concat"] = sample(unet, p, n, zeros)
    p, n = cond("concat_odd")
    out["resized"] = sample(unet, p, n, zeros)
    p, n = cond()
    out["none"] = sample(unet, p, n, zeros)
    p, n = cond("concat")
    out["batch"] = sample(unet, p, n, inp["latent2"])
    p, _ = cond("concat")
    _, n = cond()
    out["mixed"] = sample(unet, p, n, zeros)

    # The node: what it hands the VAE (a centred crop to multiples of 8), its latent.
    vae = StubVAE()
    res = InstructPixToPixConditioning.execute(cond()[0], cond()[1], inp["pixels"], vae)
    pos_out, neg_out, latent = res.result if hasattr(res, "result") else res
    node = {
        "node.pixels": vae.seen[0].contiguous(),
        "node.latent": latent["samples"].contiguous(),
        "node.concat": pos_out[0][1]["concat_latent_image"].contiguous(),
    }
    # One latent, the same object in both conditionings.
    assert neg_out[0][1]["concat_latent_image"] is pos_out[0][1]["concat_latent_image"]

    meta = {"models": json.dumps(sums), "sampler": json.dumps(SAMPLER)}
    save_file({**{"in." + k: v.contiguous() for k, v in inp.items() if k != "pixels"},
               **{"out." + k: v for k, v in out.items()}},
              os.path.join(d, "out_ip2p.safetensors"), metadata=meta)
    save_file({"in.pixels": inp["pixels"].contiguous(), **node},
              os.path.join(d, "out_ip2p_nodes.safetensors"))
    print(json.dumps({"out": sorted(out), "node": sorted(node), "models": sums}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
