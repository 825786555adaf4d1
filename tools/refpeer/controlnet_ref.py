"""Expected outputs for forgeflow's ControlNet, T2I-Adapter and inpainting tests, made by
ComfyUI 0.3.64 itself (refpeer kit, CPU, torch 2.6).

The tiny models are the ones the Go tests write (diffusion/controlnet refmodels_test.go):
real key names, random F16 weights. This script loads them with ComfyUI's own code
(comfy.model_detection + supported_models_base.BASE for the UNets, with the SD1.5
latent format; comfy.controlnet.load_controlnet_state_dict / ControlLora for the
control models; comfy.t2i_adapter.adapter and comfy.cldm.cldm classes where ComfyUI's
loader fixes full-size widths), runs the cases below through comfy.sample.sample and
the nodes.py node functions, and writes inputs and outputs (facts about ComfyUI's
output, no ComfyUI code) to three safetensors files:

  out_controlnet.safetensors  -> diffusion/controlnet/testdata/refpeer.safetensors
  out_inpaint.safetensors     -> diffusion/sd/testdata/inpaint_refpeer.safetensors
  out_nodes.safetensors       -> nodes/builtin/testdata/inpaint_refpeer.safetensors

From the repository root (the chroot sees only the kit and $REFPEER_DIR):

    D=$REFPEER_DIR/tmp-cnet; mkdir -p $D
    go test ./diffusion/controlnet -run TestWriteRefModels -controlnet.models $D
    cp tools/refpeer/controlnet_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-cnet/controlnet_ref.py /refpeer/tmp-cnet
    cp $D/out_controlnet.safetensors diffusion/controlnet/testdata/refpeer.safetensors
    cp $D/out_inpaint.safetensors diffusion/sd/testdata/inpaint_refpeer.safetensors
    cp $D/out_nodes.safetensors nodes/builtin/testdata/inpaint_refpeer.safetensors
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

import comfy.controlnet  # noqa: E402
import comfy.latent_formats  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models_base  # noqa: E402
import comfy.utils  # noqa: E402
from comfy.cldm.cldm import ControlNet  # noqa: E402
from comfy.t2i_adapter.adapter import Adapter, Adapter_light  # noqa: E402
from comfy_extras.nodes_differential_diffusion import DifferentialDiffusion  # noqa: E402
import nodes  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")
SAMPLER = dict(steps=4, cfg=4.0, sampler_name="euler", scheduler="normal", seed=7)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_unet(path):
    sd = load_file(path)
    cfg = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
    mc = comfy.supported_models_base.BASE(cfg)
    mc.latent_format = comfy.latent_formats.SD15()
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "model.diffusion_model.")
    model.load_model_weights(sd, "model.diffusion_model.")
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def sample(patcher, positive, negative, latent, noise_mask=None):
    noise = comfy.sample.prepare_noise(latent, SAMPLER["seed"])
    out = comfy.sample.sample(patcher, noise, SAMPLER["steps"], SAMPLER["cfg"], SAMPLER["sampler_name"],
                              SAMPLER["scheduler"], positive, negative, latent, denoise=1.0,
                              noise_mask=noise_mask, seed=SAMPLER["seed"], disable_pbar=True)
    return out.float().contiguous()


class StubVAE:
    """Records what the inpainting nodes hand to vae.encode; returns zeros."""

    downscale_ratio = 8

    def __init__(self):
        self.seen = []

    def spacial_compression_encode(self):
        return 8

    def encode(self, pixels):
        self.seen.append(pixels.clone())
        return torch.zeros(pixels.shape[0], 4, pixels.shape[1] // 8, pixels.shape[2] // 8)


def pattern(shape, k):
    """Images computed, not stored: 0.5 + 0.5 sin(0.0137 k i + k) over the flat index i
    (float64, then float32); the Go tests compute the same values."""
    n = 1
    for v in shape:
        n *= v
    i = torch.arange(n, dtype=torch.float64)
    return (0.5 + 0.5 * torch.sin(i * 0.0137 * k + k)).reshape(shape).float()


def main(d):
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors") and f not in
                   ("out_controlnet.safetensors", "out_inpaint.safetensors", "out_nodes.safetensors"))
    sums = {f: sha(os.path.join(d, f)) for f in files}
    path = lambda f: os.path.join(d, f)  # noqa: E731

    g = torch.Generator().manual_seed(20251207)
    inp = {
        "pos": torch.randn(1, 77, 32, generator=g),
        "neg": torch.randn(1, 77, 32, generator=g) * 0.5,
        "latent": torch.randn(1, 4, 8, 8, generator=g),
        "concat_latent": torch.randn(1, 4, 8, 8, generator=g),
        # a soft mask: a diagonal ramp with noise, in pixel space
        "mask": (torch.linspace(-0.3, 1.3, 64)[None, :, None] + torch.linspace(-0.3, 1.3, 64)[None, None, :]) / 2
                + 0.1 * torch.randn(1, 64, 64, generator=g),
        "x": torch.randn(2, 4, 2, 2, generator=g),
        "t": torch.tensor([500.0, 20.0]),
        "ctx": torch.randn(2, 7, 32, generator=g),
        "px": torch.rand(1, 20, 28, 3, generator=g),
        "pmask": torch.rand(1, 10, 14, generator=g),
    }
    inp["mask"] = inp["mask"].clamp(0, 1)
    hints = {"hint": pattern((1, 64, 64, 3), 1), "hint_odd": pattern((1, 44, 52, 3), 2),
             "hint_small": pattern((2, 3, 16, 16), 3), "hint_t2i": pattern((1, 3, 64, 64), 4),
             "hint_t2i_xl": pattern((1, 1, 64, 64), 5)}
    pos = [[inp["pos"], {}]]
    neg = [[inp["neg"], {}]]
    zeros = torch.zeros(1, 4, 8, 8)

    cn, ip, nd = {}, {}, {}
    unet = load_unet(path("unet.safetensors"))
    cn["plain"] = sample(unet, pos, neg, zeros)

    cnet = comfy.controlnet.load_controlnet(path("controlnet.safetensors"))
    p, n = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cnet, hints["hint"], 0.8, 0.1, 0.8)
    cn["cnet_adv"] = sample(unet, p, n, zeros)
    # A latent whose sides halve to odd sizes: the UNet's upsamplers follow the skips.
    cn["cnet_odd"] = sample(unet, p, n, torch.zeros(1, 4, 12, 7))

    (p_old,) = nodes.ControlNetApply().apply_controlnet(pos, cnet, hints["hint_odd"], 0.6)
    cn["cnet_old"] = sample(unet, p_old, neg, zeros)

    t2i = comfy.controlnet.load_controlnet(path("t2i_full.safetensors"))
    p, n = nodes.ControlNetApplyAdvanced().apply_controlnet(p_old, neg, t2i, hints["hint"], 1.2, 0.0, 1.0)
    cn["chain_cnet_t2i"] = sample(unet, p, n, zeros)

    lora = comfy.controlnet.load_controlnet(path("control_lora.safetensors"))
    p, n = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, lora, hints["hint"], 1.0, 0.0, 1.0)
    cn["control_lora"] = sample(unet, p, n, zeros)
    # The same control-lora on the model with a LoRA (LoraLoaderModelOnly at 0.7): its
    # pre_run copies the weights after the model was patched for sampling.
    unet_lora, _ = comfy.sd.load_lora_for_models(unet, None, load_file(path("unet_lora.safetensors")), 0.7, 0)
    cn["lora_plain"] = sample(unet_lora, pos, neg, zeros)
    cn["control_lora_on_lora"] = sample(unet_lora, p, n, zeros)

    diff = comfy.controlnet.load_controlnet(path("controlnet_diff.safetensors"), model=unet)
    p, n = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, diff, hints["hint"], 0.9, 0.0, 1.0)
    cn["diff"] = sample(unet, p, n, zeros)
    # The same diff ControlNet loaded with the LoRA model: load_controlnet loads (and so
    # patches) the model before it adds model_state_dict().
    diff_l = comfy.controlnet.load_controlnet(path("controlnet_diff.safetensors"), model=unet_lora)
    p, n = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, diff_l, hints["hint"], 0.9, 0.0, 1.0)
    cn["diff_on_lora"] = sample(unet_lora, p, n, zeros)

    # Adapters whose loader fixes full-size widths (light) or that need a 16× hint (xl)
    # run through ComfyUI's classes directly, configured as load_t2i_adapter would.
    def adapter_out(prefix, model, hint):
        with torch.no_grad():
            feats = model(hint)
        for key in ("input", "middle"):
            for i, f in enumerate(feats.get(key, [])):
                if f is not None:
                    cn["%s.%s.%d" % (prefix, key, i)] = f.contiguous()

    sd = load_file(path("t2i_full_conv1.safetensors"))
    a = Adapter(cin=64, channels=[32, 64, 128, 128], nums_rb=2, ksize=1, sk=True, use_conv=True, xl=False)
    a.load_state_dict({k: v.float() for k, v in sd.items()})
    adapter_out("t2i_conv1", a, hints["hint_t2i"].mean(1, keepdim=True))
    sd = load_file(path("t2i_xl.safetensors"))
    a = Adapter(cin=256, channels=[32, 64, 128, 128], nums_rb=2, ksize=3, sk=True, use_conv=False, xl=True)
    a.load_state_dict({k: v.float() for k, v in sd.items()})
    adapter_out("t2i_xl", a, hints["hint_t2i_xl"])
    sd = load_file(path("t2i_light.safetensors"))
    a = Adapter_light(cin=192, channels=[32, 64, 128, 128], nums_rb=2)
    a.load_state_dict({k: v.float() for k, v in sd.items()})
    adapter_out("t2i_light", a, hints["hint_t2i"])

    # Union: cldm.ControlNet with its union parts, configured from the file as
    # load_controlnet_state_dict does for a diffusers union file.
    sd = {k: v.float() for k, v in load_file(path("union.safetensors")).items()}
    cfg = comfy.model_detection.detect_unet_config(sd, "")
    cfg.pop("out_channels", None)
    # Only the middle block attends here, where detect_unet_config does not look.
    cfg["context_dim"] = sd["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    cfg.update(num_heads=-1, num_head_channels=64, hint_channels=3,
               union_controlnet_num_control_type=sd["task_embedding"].shape[0], dtype=torch.float32)
    u = ControlNet(**cfg)
    u.load_state_dict(sd)
    for name, types in (("union_auto", []), ("union_canny", [3])):
        with torch.no_grad():
            out = u(x=inp["x"], hint=hints["hint_small"], timesteps=inp["t"], context=inp["ctx"], control_type=types)
        for key in ("output", "middle"):
            for i, f in enumerate(out[key]):
                cn["%s.%s.%d" % (name, key, i)] = f.contiguous()

    # Inpainting.
    inpaint = load_unet(path("unet_inpaint.safetensors"))
    mask4 = inp["mask"].reshape(1, 1, 64, 64)
    c = {"concat_latent_image": inp["concat_latent"], "concat_mask": mask4}
    ip["concat"] = sample(inpaint, [[inp["pos"], dict(c)]], [[inp["neg"], dict(c)]], inp["latent"], noise_mask=mask4)
    ip["vae_mask"] = sample(inpaint, pos, neg, inp["latent"], noise_mask=mask4.round())
    ip["txt2img"] = sample(inpaint, pos, neg, zeros)
    for name, strength, model, conds in (("soft", 1.0, unet, (pos, neg)),
                                         ("soft_half_concat", 0.5, inpaint,
                                          ([[inp["pos"], dict(c)]], [[inp["neg"], dict(c)]]))):
        m = model.clone()
        m.set_model_denoise_mask_function(
            lambda *args, s=strength, **kwargs: DifferentialDiffusion.forward(*args, **kwargs, strength=s))
        ip[name] = sample(m, conds[0], conds[1], inp["latent"], noise_mask=mask4)

    # Node-level pixels handed to the VAE, and the masks the nodes return.
    for grow in (0, 5, 6):
        v = StubVAE()
        (lat,) = nodes.VAEEncodeForInpaint().encode(v, inp["px"], inp["pmask"], grow)
        nd["vaeenc%d.pixels" % grow] = v.seen[0].contiguous()
        nd["vaeenc%d.noise_mask" % grow] = lat["noise_mask"].contiguous()
    v = StubVAE()
    p, n, lat = nodes.InpaintModelConditioning().encode(pos, neg, inp["px"], v, inp["pmask"], True)
    nd["imc.concat_pixels"] = v.seen[0].contiguous()
    nd["imc.orig_pixels"] = v.seen[1].contiguous()
    nd["imc.noise_mask"] = lat["noise_mask"].contiguous()
    nd["imc.concat_mask"] = p[0][1]["concat_mask"].contiguous()

    meta = {"comfyui": "0.3.64 a125cd84", "torch": torch.__version__, "models": json.dumps(sums),
            "sampler": json.dumps(SAMPLER)}
    ins = {"in." + k: v.float().contiguous() for k, v in inp.items()}
    save_file({**ins, **{"out." + k: v for k, v in cn.items()}}, path("out_controlnet.safetensors"), metadata=meta)
    save_file({**{"in." + k: ins["in." + k] for k in ("pos", "neg", "latent", "concat_latent", "mask")},
               **{"out." + k: v for k, v in ip.items()}}, path("out_inpaint.safetensors"), metadata=meta)
    save_file({**{"in." + k: ins["in." + k] for k in ("px", "pmask")},
               **{"out." + k: v.float() for k, v in nd.items()}}, path("out_nodes.safetensors"), metadata=meta)
    print(json.dumps({"controlnet": sorted(cn), "inpaint": sorted(ip), "nodes": sorted(nd), "models": sums}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
