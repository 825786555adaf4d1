"""Writes internal/webpmux/testdata/*.webp and webp_ref.json: animated WebPs made by
Pillow's WebPAnimEncoder (libwebp), whose sub-frame rectangles, blending and disposal
choices are libwebp's own, lossy stills, and the frames Pillow decodes from them
(libwebp's WebPAnimDecoder) as SHA-256 digests of their RGBA bytes. The Go test decodes
the files with internal/webpmux and compares.

Run inside the refpeer chroot (Pillow with libwebp), e.g.
    <kit>/chroot.sh python3 /refpeer/tmp/webp_ref.py /refpeer/tmp/out
"""
import hashlib
import json
import sys

import numpy as np
from PIL import Image

out = sys.argv[1]
w, h = 24, 16


def frames(alpha, smooth=False):
    rng = np.random.RandomState(7)
    base = (rng.rand(h, w, 4) * 255).astype(np.uint8)
    if smooth:  # lossy frames: chroma that 4:2:0 sampling keeps (the decoders differ at sharp edges)
        yy, xx = np.mgrid[0:h, 0:w]
        base[..., 0], base[..., 1], base[..., 2] = 60 + 6 * xx, 200 - 5 * yy, 120 + 2 * (xx + yy)
    base[..., 3] = 255
    fs = []
    for i in range(5):
        f = base.copy()
        x = 2 + 3 * i  # a moving square and a blinking corner: sub-frame rectangles
        f[4:10, x:x + 6, :3] = (40 * i, 200 - 30 * i, 90) if not smooth else (150 + 10 * i, 140, 100)
        if alpha:
            f[4:10, x:x + 6, 3] = 96 + 30 * i
            f[0:3, 0:4, 3] = 0 if i % 2 else 255
        else:
            f[0:3, 0:4, :3] = 255 if i % 2 else 0
        fs.append(Image.fromarray(f, "RGBA" if alpha else "RGBA").convert("RGBA" if alpha else "RGB"))
    return fs


def digests(im):
    out = []
    for n in range(getattr(im, "n_frames", 1)):
        im.seek(n)
        out.append(hashlib.sha256(im.convert("RGBA").tobytes()).hexdigest())
    return out


ref = {"generator": "tools/refpeer/webp_anim_ref.py", "pillow": Image.__version__, "files": {}}
for name, alpha, lossless in [("anim_alpha", True, True), ("anim_opaque", False, True), ("anim_lossy", True, False)]:
    fs = frames(alpha, smooth=not lossless)
    path = f"{out}/{name}.webp"
    fs[0].save(path, save_all=True, append_images=fs[1:], duration=[70, 80, 90, 100, 110],
               lossless=lossless, quality=50, method=4, minimize_size=True, kmin=2, kmax=4, loop=0)
    im = Image.open(path)
    ref["files"][name] = {"width": w, "height": h, "durations": [70, 80, 90, 100, 110], "frames": digests(im)}
# Lossy stills, odd-sized (the chroma planes' last column and row), with and without alpha.
for name, mode in [("still_lossy", "RGB"), ("still_lossy_alpha", "RGBA")]:
    f = frames(True, smooth=True)[2].resize((w - 1, h - 3))
    noise = np.random.RandomState(3).randint(0, 40, (h - 3, w - 1, 4)).astype(np.uint8)
    f = Image.fromarray(np.asarray(f) // 2 + noise, "RGBA").convert(mode)
    path = f"{out}/{name}.webp"
    f.save(path, quality=75, method=4)
    ref["files"][name] = {"width": w - 1, "height": h - 3, "durations": [0], "frames": digests(Image.open(path))}
json.dump(ref, open(f"{out}/webp_ref.json", "w"), indent=1)
