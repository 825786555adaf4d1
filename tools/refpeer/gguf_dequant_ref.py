"""ComfyUI-GGUF's dequantization of random GGUF blocks under every dequant_dtype.

For gpu/internal/gemm's TestRefpeerDequant: the golden gguf family holds the default
(float16-math) and float32-math results of the legacy and k-quant types; this fixture
adds IQ4_NL, IQ4_XS, TQ1_0 and TQ2_0, and the bfloat16 arithmetic of
UnetLoaderGGUFAdvanced's dequant_dtype "bfloat16", for every type ComfyUI-GGUF decodes.

Each type gets two rows of 256 elements of random bytes whose fp16 block scales are
set to random normal values / 16 (finite), written with gguf-py's GGUFWriter, read back
with ComfyUI-GGUF's gguf_sd_loader and dequantized with its dequantize_tensor(t,
dtype=torch.float32, dequant_dtype=...) as its Linear layers call it. Only the raw
bytes and ComfyUI-GGUF's outputs are stored (no ComfyUI code).

Inside the refpeer chroot (../shared/refpeer/README.md), from the repository root:

    D=$REFPEER_DIR/tmp-ggufdq; mkdir -p $D; cp tools/refpeer/gguf_dequant_ref.py $D/
    ../shared/refpeer/chroot.sh env PYTHONPATH=/refpeer/ComfyUI:/refpeer/ComfyUI/custom_nodes:/kit/shims:/refpeer/pylib \\
        python3 /refpeer/tmp-ggufdq/gguf_dequant_ref.py /refpeer/tmp-ggufdq
    cp $D/gguf_dequant_ref.safetensors gpu/internal/gemm/testdata/
"""
import importlib
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import comfy.options  # noqa: F401
import comfy.cli_args

comfy.cli_args.args.cpu = True

import gguf  # noqa: E402

importlib.import_module("ComfyUI-GGUF")
loader = importlib.import_module("ComfyUI-GGUF.loader")
dequant = importlib.import_module("ComfyUI-GGUF.dequant")

# type name: byte offsets of the fp16 scales in a block
TYPES = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0], "TQ1_0": [52], "TQ2_0": [64],
}
# dequant_dtype option: the value UnetLoaderGGUF(Advanced).load_unet gives the layers
MODES = {"default": None, "float32": torch.float32, "float16": torch.float16,
         "bfloat16": torch.bfloat16, "target": "target"}
# Stored: "default", "float32" and "bfloat16"; "float16" and "target" (on a float32
# model) are checked here to equal "default" and "float32".
STORED = ("default", "float32", "bfloat16")
ALIASES = {"float16": "default", "target": "float32"}
ROWS, COLS = 2, 256


def main(out_dir):
    rng = np.random.default_rng(20261208)
    raw = {}
    for name, offs in TYPES.items():
        qt = getattr(gguf.GGMLQuantizationType, name)
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        nb = ROWS * COLS // bs
        blocks = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
        for off in offs:
            scales = (rng.standard_normal(nb) / 16).astype(np.float16)
            blocks[:, off:off + 2] = scales.view(np.uint8).reshape(nb, 2)
        raw[name] = blocks.reshape(ROWS, -1)
    path = os.path.join(out_dir, "gguf_dequant_ref.gguf")
    w = gguf.GGUFWriter(path, "flux")
    for name, arr in raw.items():
        w.add_tensor(name.lower() + ".weight", arr, raw_shape=arr.shape,
                     raw_dtype=getattr(gguf.GGMLQuantizationType, name))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    sd = loader.gguf_sd_loader(path)
    out, info = {}, {}
    for name, arr in raw.items():
        t = sd[name.lower() + ".weight"]
        out["in.%s.bytes" % name] = torch.from_numpy(arr.copy())
        info[name] = {"loader_tensor_type": getattr(t.tensor_type, "name", str(t.tensor_type)),
                      "shape": list(t.tensor_shape)}
        got = {}
        for mode, dd in MODES.items():
            v = dequant.dequantize_tensor(t, dtype=torch.float32, dequant_dtype=dd)
            got[mode] = v.float().reshape(ROWS, COLS).contiguous()
        for mode, same in ALIASES.items():
            if not torch.equal(got[mode], got[same]):
                raise SystemExit("%s: dequant_dtype %s differs from %s" % (name, mode, same))
        for mode in STORED:
            out["out.%s.%s" % (name, mode)] = got[mode]
    meta = {"generator": "tools/refpeer/gguf_dequant_ref.py", "torch": torch.__version__,
            "rows": ROWS, "cols": COLS, "types": info, "modes": list(STORED), "same_as": ALIASES}
    save_file(out, os.path.join(out_dir, "gguf_dequant_ref.safetensors"), metadata={"case": json.dumps(meta)})


if __name__ == "__main__":
    main(sys.argv[1])
