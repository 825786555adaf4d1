"""Wall and CPU seconds of one SD1.5 UNet evaluation (CFG batch 2) in ComfyUI 0.3.64 on
the CPU, for one size per run, with one untimed warm-up evaluation like `forgeflow bench
unet`. The kit's bench_unet.py gives wall seconds only and runs both sizes; this one adds
the process's CPU seconds per evaluation (all threads), the figure that stays comparable
on a loaded machine. Prints one JSON line.

Runs inside the refpeer chroot (../shared/refpeer/README.md), which sees only the kit and
$REFPEER_DIR, so copy it there first:

    cp tools/refpeer/bench_unet_cpu.py $REFPEER_DIR/tmp/
    ../shared/refpeer/chroot.sh python3 /refpeer/tmp/bench_unet_cpu.py 256 3
"""
import json
import sys
import time

px, runs = int(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, '/refpeer/ComfyUI')
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0], '--cpu']
import torch  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.sd  # noqa: E402

torch.set_grad_enabled(False)
m = comfy.sd.load_checkpoint_guess_config('/refpeer/models/checkpoints/sd15_random_fp16.safetensors')[0]
comfy.model_management.load_models_gpu([m])
g = torch.Generator().manual_seed(1)
x = torch.randn(2, 4, px // 8, px // 8, generator=g)
ctx = torch.randn(2, 77, 768, generator=g)
sigma = torch.tensor([14.6, 14.6])
wall, cpu = [], []
for i in range(runs + 1):
    t, c = time.time(), time.process_time()
    m.model.apply_model(x, sigma, c_crossattn=ctx)
    wall.append(time.time() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"px": px, "batch": 2, "first_s": round(wall[0], 2), "sec": [round(t, 2) for t in wall[1:]],
                  "cpu_s": [round(c, 2) for c in cpu[1:]], "threads": torch.get_num_threads()}), flush=True)
