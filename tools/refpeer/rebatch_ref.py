"""Runs ComfyUI's own RebatchLatents (comfy_extras/nodes_rebatch.py LatentRebatch) on the
cases of nodes/builtin TestRebatchLatents and prints each piece: the first value of each
sample, the batch indices, and the first value of each noise-mask plane with the mask's
size (or no mask), so the hand-worked expectations of the Go test can be compared.

Run inside the refpeer chroot, from ComfyUI's folder, e.g.
    <kit>/chroot.sh bash -c 'cd /refpeer/ComfyUI && PYTHONPATH=/refpeer/ComfyUI:$PYTHONPATH \
        python3 /refpeer/tmp-upscale/rebatch_ref.py'
"""
import torch

from comfy_extras.nodes_rebatch import LatentRebatch


def lat(base, n, c, h, w, mask=None, inds=None):
    d = {"samples": base + torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)}
    if mask is not None:
        v, mn, mh, mw = mask
        d["noise_mask"] = torch.full((mn, 1, mh, mw), v)
    if inds is not None:
        d["batch_index"] = inds
    return d


cases = {
    "pieces": ([lat(100, 3, 4, 2, 2), lat(200, 2, 4, 2, 2)], 2),
    "sizes and masks": ([lat(0, 1, 4, 2, 2, (0.5, 1, 16, 16), [7]), lat(50, 2, 4, 3, 3), lat(500, 1, 4, 3, 3)], 4),
    "ones fill in": ([lat(0, 1, 4, 2, 2, (0.0, 1, 16, 16)), lat(9, 1, 4, 2, 2)], 2),
    "mask repeated": ([lat(0, 3, 4, 2, 2, (0.25, 1, 16, 16))], 3),
}
for name, (latents, size) in cases.items():
    out = LatentRebatch.execute(latents, [size]).result[0]
    print(name)
    for p in out:
        s = p["samples"]
        line = f"  samples {[float(x[0, 0, 0]) for x in s]} inds {list(p['batch_index'])}"
        if "noise_mask" in p:
            m = p["noise_mask"]
            line += f" mask {[float(x.flatten()[0]) for x in m]} {list(m.shape[-2:])}"
        print(line)
