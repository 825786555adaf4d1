#!/bin/bash
# CPU speed of forgeflow and ComfyUI 0.3.64 side by side on the refpeer kit's random SD1.5
# checkpoint (issue 13; codex/performance.md has the figures and how to read them). Run it
# as root from the repository root at a quiet moment (uptime load below 2): each pair runs
# back to back, every line is prefixed by the load average, nothing is left running.
#
#   go build -o /tmp/ff ./cmd/forgeflow
#   FF=/tmp/ff tools/refpeer/cpu_side_by_side.sh | tee /tmp/side_by_side.log
#
# Needs the kit set up (../shared/refpeer/README.md; $REFPEER_DIR/READY-chroot and the
# checkpoint models/checkpoints/sd15_random_fp16.safetensors). The txt2img pair starts its
# own ComfyUI server on PORT (default 8197, so as not to meet another engineer's) and stops
# it. SKIP_TXT2IMG=1 leaves out the two 20-step runs (≈ 2 × 2–4 minutes).
set -euo pipefail
FF=${FF:-/tmp/ff}
K=${K:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/refpeer}
export REFPEER_DIR=${REFPEER_DIR:-$HOME/refpeer}
CK=$REFPEER_DIR/models/checkpoints/sd15_random_fp16.safetensors
OUT=${OUT:-$REFPEER_DIR/ff/side_by_side}
mkdir -p "$OUT" "$REFPEER_DIR/tmp"
[ -e "$REFPEER_DIR/READY-chroot" ] && [ -e "$CK" ] || { echo "refpeer kit not ready under $REFPEER_DIR" >&2; exit 2; }
say() { echo "[$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)] $*"; }
say "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; forgeflow $($FF version 2>/dev/null || echo "$FF")"

# 1. one UNet evaluation, CFG batch 2, at 256² and 512²
for px in 256 512; do
  runs=3; [ $px = 512 ] && runs=2
  say "forgeflow unet ${px}²: $($FF bench unet --ckpt "$CK" --width $px --height $px --runs $runs --json | tr -d '\n ')"
done
say "comfyui unet: $("$K/chroot.sh" python3 /kit/bench_unet.py | tr '\n' ' ')"

# 2. VAE decode: 512² whole, 1024² tiled (512 px tiles, overlap 64)
say "forgeflow vae 512²: $($FF bench vae --ckpt "$CK" --width 512 --height 512 --runs 2 --json | tr -d '\n ')"
say "forgeflow vae 1024² tiled: $($FF bench vae --ckpt "$CK" --width 1024 --height 1024 --tile 512 --overlap 64 --runs 1 --json | tr -d '\n ')"
cp "$(dirname "$0")/bench_vae.py" "$REFPEER_DIR/tmp/"
say "comfyui vae: $("$K/chroot.sh" python3 /refpeer/tmp/bench_vae.py | tr '\n' ' ')"

# 3. the kit's 20-step 512² txt2img end to end, each in a fresh process (model load
#    included), wall time and peak RSS
[ "${SKIP_TXT2IMG:-}" = 1 ] && exit 0
cat > "$OUT/models.yaml" <<YAML
refpeer:
    base_path: $REFPEER_DIR/models
    checkpoints: checkpoints
    vae: vae
    text_encoders: clip
YAML
say "forgeflow txt2img 512² 20 steps: $( { /usr/bin/time -f 'wall %e s, peak RSS %M KB' "$FF" run --plain \
    --base-directory "$OUT/base" --output-directory "$OUT/out" --extra-model-paths-config "$OUT/models.yaml" \
    "$K/workflows/sd15_txt2img_512_20.json" >/dev/null; } 2>&1 | tail -1)"
PORT=${PORT:-8197}
PORT=$PORT "$K/start.sh" >/dev/null
trap 'PORT=$PORT "$K/stop.sh" >/dev/null 2>&1 || true' EXIT
pid=$(cat "$REFPEER_DIR/run/comfyui-$PORT.pid")
(cd "$K" && python3 run_workflow.py workflows/sd15_txt2img_512_20.json --server "http://127.0.0.1:$PORT" \
    --log "$REFPEER_DIR/run/comfyui-$PORT.log" --out "$OUT/comfy_512_20.png" --summary "$OUT/comfy_512_20.json" >/dev/null)
say "comfyui txt2img 512² 20 steps (fresh server): $(python3 -c "import json; s=json.load(open('$OUT/comfy_512_20.json')); print({k: s[k] for k in s if k in ('wall_s', 'comfy_exec_s', 'sampler_s_per_step', 'comfy_log_prompt_executed_s')})") server peak RSS $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
