"""ComfyUI's own model merging on the files of tools/refpeer/mergefixtures.

For every case of DIR/cases.json this runs ComfyUI 0.3.64's merge node classes
(comfy_extras.nodes_model_merging and nodes_model_merging_model_specific) on two tiny
SD1.5 or SDXL checkpoints, with stand-ins for ModelPatcher/CLIP that do what clone,
get_key_patches and add_patches do with the state dict, computes every patched weight
with comfy.lora.calculate_weight on a float32 copy rounded back to the stored dtype (as
patch_weight_to_device does), and compares each tensor of forgeflow's saved checkpoint
DIR/ff_<case>.safetensors with it. It also reads forgeflow's file with
comfy.utils.load_torch_file and checks that comfy.model_detection.detect_unet_config sees
the same UNet as in the source checkpoint. Prints one JSON line per case.

Run inside the refpeer chroot (../shared/refpeer); DIR and this file must lie under
$REFPEER_DIR:

    go run ./tools/refpeer/mergefixtures -out $REFPEER_DIR/tmp/merge
    cp tools/refpeer/merge_check.py $REFPEER_DIR/tmp/merge/
    ../shared/refpeer/chroot.sh PYTHONPATH=/refpeer/ComfyUI:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp/merge/merge_check.py /refpeer/tmp/merge
"""
import json
import os
import sys

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import torch  # noqa: E402

import comfy.lora  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.utils  # noqa: E402
import comfy_extras.nodes_model_merging as mm  # noqa: E402
import comfy_extras.nodes_model_merging_model_specific as mms  # noqa: E402


class Patchable:
    """What the merge nodes ask of a MODEL or CLIP: clone, get_key_patches, add_patches."""

    def __init__(self, sd):
        self.sd = sd
        self.patches = {}

    def clone(self):
        c = Patchable(self.sd)
        c.patches = {k: list(v) for k, v in self.patches.items()}
        return c

    def get_key_patches(self, filter_prefix=None):
        out = {}
        for k, w in self.sd.items():
            if filter_prefix is not None and not k.startswith(filter_prefix):
                continue
            out[k] = [(w, lambda a, **kwargs: a)] + self.patches.get(k, [])
        return out

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        for k in patches:
            if k in self.sd:
                self.patches.setdefault(k, []).append((strength_patch, patches[k], strength_model, None, None))


def node_class(name):
    for mod in (mm, mms):
        for attr in dir(mod):
            cls = getattr(mod, attr)
            if isinstance(cls, type) and attr == name:
                return cls
    # nodes_model_merging registers some classes under other names.
    for mod in (mm, mms):
        m = getattr(mod, "NODE_CLASS_MAPPINGS", {})
        if name in m:
            return m[name]
    raise KeyError(name)


def run_node(name, a, b, values):
    cls = node_class(name)
    req = cls.INPUT_TYPES()["required"]
    kwargs = {}
    for k in req:  # the schema's order, as a prompt saved by the UI lists them
        if k in ("model1", "model2", "clip1", "clip2"):
            continue
        kwargs[k] = values.get(k, 1.0)
    first, second = [k for k in req if k in ("model1", "model2", "clip1", "clip2")]
    fn = getattr(cls(), cls.FUNCTION)
    return fn(**{first: a, second: b}, **kwargs)[0]


def main(d):
    cases = json.load(open(os.path.join(d, "cases.json")))
    files = {"sd1": ("a.safetensors", "b.safetensors", "cond_stage_model."),
             "sdxl": ("xl_a.safetensors", "xl_b.safetensors", "conditioner.embedders.")}
    up = "model."
    for c in cases:
        fa, fb, clip_prefix = files[c["family"]]
        a = comfy.utils.load_torch_file(os.path.join(d, fa))
        b = comfy.utils.load_torch_file(os.path.join(d, fb))
        unet_a = {k[len(up):]: v for k, v in a.items() if k.startswith(up + "diffusion_model.")}
        unet_b = {k[len(up):]: v for k, v in b.items() if k.startswith(up + "diffusion_model.")}
        # The merge is elementwise, so merging the stored tensors (OpenCLIP's fused
        # in_proj included) is merging ComfyUI's converted ones.
        clip_a = {k: v for k, v in a.items() if k.startswith(clip_prefix)}
        clip_b = {k: v for k, v in b.items() if k.startswith(clip_prefix)}
        want_cfg = comfy.model_detection.detect_unet_config(a, "model.diffusion_model.")
        m = run_node(c["model"], Patchable(unet_a), Patchable(unet_b), c["model_inputs"])
        cl = run_node(c["clip"], Patchable(clip_a), Patchable(clip_b), c["clip_inputs"])
        expect = {}
        for k, w in a.items():
            p = None
            if k.startswith(up) and k[len(up):] in m.patches:
                p = m.patches[k[len(up):]]
            elif k in cl.patches:
                p = cl.patches[k]
            if p is None:
                expect[k] = w
                continue
            out = comfy.lora.calculate_weight(p, w.to(torch.float32).clone(), k)
            expect[k] = out.to(w.dtype)
        ff = comfy.utils.load_torch_file(os.path.join(d, "ff_%s.safetensors" % c["name"]))
        res = {"case": c["name"], "tensors": len(ff), "source_tensors": len(a),
               "patched": sum(len(x) > 0 for x in m.patches.values()) + sum(len(x) > 0 for x in cl.patches.values()),
               "same_unet_config": comfy.model_detection.detect_unet_config(ff, "model.diffusion_model.") == want_cfg}
        max_diff, differ, values, missing = 0.0, 0, 0, []
        for k, w in expect.items():
            if k not in ff:
                missing.append(k)
                continue
            g = ff[k]
            if g.dtype != w.dtype or tuple(g.shape) != tuple(w.shape):
                missing.append(k + " (dtype/shape)")
                continue
            diff = (g.to(torch.float32) - w.to(torch.float32)).abs()
            max_diff = max(max_diff, float(diff.max()) if diff.numel() else 0.0)
            differ += int((diff > 0).sum())
            values += diff.numel()
        res.update({"max_abs_diff": max_diff, "values_differing": differ, "values": values, "missing": missing[:5]})
        print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
