"""Seconds of one SD1.5 VAE decode in ComfyUI 0.3.64 on the CPU: a random latent decoded
whole at 512² and with ComfyUI's tiled decode (tiles of 512 px, overlap 64) at 1024², as
the VAEDecode and VAEDecodeTiled nodes call it. Prints one JSON line per case; the
forgeflow side is `forgeflow bench vae` (cpu_side_by_side.sh runs both).

Runs inside the refpeer chroot (see ../shared/refpeer/README.md); the chroot sees only
the kit and $REFPEER_DIR, so copy this file there first:

    cp tools/refpeer/bench_vae.py $REFPEER_DIR/tmp/
    ../shared/refpeer/chroot.sh python3 /refpeer/tmp/bench_vae.py [512|1024|512,1024 [RUNS]]
"""
import json
import sys
import time

cases = sys.argv[1] if len(sys.argv) > 1 else ''  # "512", "1024" or "512,1024"; empty: both
runs_arg = int(sys.argv[2]) if len(sys.argv) > 2 else 0  # timed runs; 0: 2 at 512², 1 tiled
sys.path.insert(0, '/refpeer/ComfyUI')
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0], '--cpu']
import torch  # noqa: E402
import comfy.sd  # noqa: E402

torch.set_grad_enabled(False)
vae = comfy.sd.load_checkpoint_guess_config('/refpeer/models/checkpoints/sd15_random_fp16.safetensors')[2]
for px, tiled, runs in ((512, False, 2), (1024, True, 1)):
    z = torch.randn(1, 4, px // 8, px // 8, generator=torch.Generator().manual_seed(1))
    if cases and str(px) not in cases.split(','):
        continue
    runs = runs_arg or runs
    times, cpu = [], []
    for _ in range(runs + 1):  # the first run warms up, as forgeflow bench does
        t, c = time.time(), time.process_time()
        if tiled:
            vae.decode_tiled(z, tile_x=512 // 8, tile_y=512 // 8, overlap=64 // 8)
        else:
            vae.decode(z)
        times.append(time.time() - t)
        cpu.append(time.process_time() - c)
    print(json.dumps({"px": px, "tiled": tiled, "first_s": round(times[0], 2), "sec": [round(t, 2) for t in times[1:]],
                      "cpu_s": [round(c, 2) for c in cpu[1:]], "threads": torch.get_num_threads()}), flush=True)
