#!/bin/bash
# CPU speed of forgeflow and ComfyUI 0.3.64 side by side on the refpeer kit's random SD1.5
# checkpoint (issue 13; codex/performance.md has the figures and how to read them). Run it
# as root from the repository root. The two engines ALTERNATE (forgeflow, ComfyUI,
# forgeflow, ComfyUI, …, ROUNDS times each), so that on a shared machine both see the same
# neighbours; every line carries the load average, and the end prints the medians.
#
#   go build -o /tmp/ff ./cmd/forgeflow
#   FF=/tmp/ff tools/refpeer/cpu_side_by_side.sh | tee /tmp/side_by_side.log
#
# ROUNDS (default 3) rounds of: UNet eval (batch 2) at 256² and 512², VAE decode 512²
# (TILED=1 adds the 1024² tiled decode, 512 px tiles, overlap 64), forgeflow's first then
# ComfyUI's; CASES (default "unet256 unet512 vae512") picks some of them, RUNS (default 3
# at 256², else 2) the timed runs per process after its warm-up. TXT2IMG_ROUNDS (default 1; 0 leaves it out) rounds of the kit's 20-step 512²
# txt2img end to end, each in a fresh process (model load included): `forgeflow run` under
# /usr/bin/time against a fresh ComfyUI server on PORT (default 8197, not another
# engineer's), wall time and peak RSS. Needs the kit set up (../shared/refpeer/README.md;
# $REFPEER_DIR/READY-chroot and models/checkpoints/sd15_random_fp16.safetensors). Nothing
# is left running. The raw lines go to $OUT/runs.jsonl.
set -euo pipefail
FF=${FF:-/tmp/ff}
K=${K:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/refpeer}
export REFPEER_DIR=${REFPEER_DIR:-$HOME/refpeer}
ROUNDS=${ROUNDS:-3}
TXT2IMG_ROUNDS=${TXT2IMG_ROUNDS:-1}
CK=$REFPEER_DIR/models/checkpoints/sd15_random_fp16.safetensors
OUT=${OUT:-$REFPEER_DIR/ff/side_by_side}
mkdir -p "$OUT" "$REFPEER_DIR/tmp"
[ -e "$REFPEER_DIR/READY-chroot" ] && [ -e "$CK" ] || { echo "refpeer kit not ready under $REFPEER_DIR" >&2; exit 2; }
cp "$(dirname "$0")/bench_vae.py" "$(dirname "$0")/bench_unet_cpu.py" "$REFPEER_DIR/tmp/"
LOG=$OUT/runs.jsonl
: >"$LOG"
load() { cut -d' ' -f1 /proc/loadavg; }
# rec ENGINE CASE JSON: one line of the log, with the load average before and after.
rec() {
  local l0=$1 eng=$2 case=$3 json=$4
  echo "{\"engine\":\"$eng\",\"case\":\"$case\",\"load\":[$l0,$(load)],\"at\":\"$(date -u +%H:%M:%S)\",\"r\":$json}" | tee -a "$LOG"
}
ff() { local l=$(load); rec "$l" forgeflow "$1" "$("$FF" bench "${@:2}" --ckpt "$CK" --json | tr -d '\n ')"; }
# PyTorch picks one thread on some VMs (cpuinfo's core count; on the 2-vCPU AMD EPYC of
# codex/performance.md omp_get_max_threads() is 1): ComfyUI gets as many threads as
# forgeflow, COMFY_THREADS (default nproc).
comfy() { local l=$(load); rec "$l" comfyui "$1" "$("$K/chroot.sh" OMP_NUM_THREADS="${COMFY_THREADS:-$(nproc)}" python3 "${@:2}" | tail -1)"; }
echo "# cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; $(uptime)"

CASES=" ${CASES:-unet256 unet512 vae512} "
want() { [[ $CASES == *" $1 "* ]]; }
for r in $(seq "$ROUNDS"); do
  if want unet256; then
    ff unet256 unet --width 256 --height 256 --runs "${RUNS:-3}"
    comfy unet256 /refpeer/tmp/bench_unet_cpu.py 256 "${RUNS:-3}"
  fi
  if want unet512; then
    ff unet512 unet --width 512 --height 512 --runs "${RUNS:-2}"
    comfy unet512 /refpeer/tmp/bench_unet_cpu.py 512 "${RUNS:-2}"
  fi
  if want vae512; then
    ff vae512 vae --width 512 --height 512 --runs "${RUNS:-2}"
    comfy vae512 /refpeer/tmp/bench_vae.py 512 "${RUNS:-2}"
  fi
  if [ "${TILED:-}" = 1 ]; then
    ff vae1024t vae --width 1024 --height 1024 --tile 512 --overlap 64 --runs 1
    comfy vae1024t /refpeer/tmp/bench_vae.py 1024 "${RUNS:-1}"
  fi
done

if [ "$TXT2IMG_ROUNDS" -gt 0 ]; then
  cat >"$OUT/models.yaml" <<YAML
refpeer:
    base_path: $REFPEER_DIR/models
    checkpoints: checkpoints
    vae: vae
    text_encoders: clip
# the kit's ComfyUI install, for its CLIP tokenizer vocabulary (comfy/sd1_tokenizer)
comfyui:
    base_path: $REFPEER_DIR/ComfyUI
    checkpoints: models/checkpoints
YAML
  PORT=${PORT:-8197}
  trap 'PORT=$PORT "$K/stop.sh" >/dev/null 2>&1 || true' EXIT
  # start.sh clears the environment (env -i), so its ComfyUI gets PyTorch's own thread count
  # (1 here); this starts the same server with start.sh's flags and COMFY_THREADS threads, and
  # writes the PID file stop.sh reads.
  start_comfy() {
    local log=$REFPEER_DIR/run/comfyui-$PORT.log
    "$K/chroot.sh" OMP_NUM_THREADS="${COMFY_THREADS:-$(nproc)}" python3 /refpeer/ComfyUI/main.py \
      --cpu --listen 127.0.0.1 --port "$PORT" --front-end-root /kit/frontend_stub \
      --extra-model-paths-config /kit/extra_model_paths.yaml --disable-api-nodes --disable-auto-launch \
      --database-url "sqlite:////refpeer/run/comfyui-$PORT.db" >"$log" 2>&1 </dev/null &
    echo $! >"$REFPEER_DIR/run/comfyui-$PORT.pid"
    for _ in $(seq 300); do
      kill -0 $! 2>/dev/null || { echo "ComfyUI on port $PORT exited; tail of $log:" >&2; tail -20 "$log" >&2; exit 1; }
      curl -sf "http://127.0.0.1:$PORT/object_info/KSampler" >/dev/null && return 0
      sleep 1
    done
    echo "ComfyUI on port $PORT not ready after 300 s; see $log" >&2; exit 1
  }
  for r in $(seq "$TXT2IMG_ROUNDS"); do
    l=$(load)
    rm -rf "$OUT/out"
    /usr/bin/time -o "$OUT/time.txt" -f '{"wall_s":%e,"peak_rss_kb":%M,"cpu_s":%U+%S}' "$FF" run --plain \
      --base-directory "$OUT/base" --output-directory "$OUT/out" --extra-model-paths-config "$OUT/models.yaml" \
      "$K/workflows/sd15_txt2img_512_20.json" >"$OUT/ff_run.log" 2>&1 ||
      { echo "forgeflow run failed; see $OUT/ff_run.log" >&2; tail -20 "$OUT/ff_run.log" >&2; exit 1; }
    t=$(tail -1 "$OUT/time.txt")
    rec "$l" forgeflow txt2img512 "$(python3 -c "import json,sys; d=sys.argv[1]; u,s=d.split('\"cpu_s\":')[1].rstrip('}').split('+'); j=json.loads(d.split(',\"cpu_s\"')[0]+'}'); j['cpu_s']=round(float(u)+float(s),2); print(json.dumps(j))" "$t")"
    l=$(load)
    start_comfy
    pid=$(cat "$REFPEER_DIR/run/comfyui-$PORT.pid")
    (cd "$K" && python3 run_workflow.py workflows/sd15_txt2img_512_20.json --server "http://127.0.0.1:$PORT" \
      --log "$REFPEER_DIR/run/comfyui-$PORT.log" --out "$OUT/comfy_512_20.png" --summary "$OUT/comfy_512_20.json" >/dev/null)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    cpu=$(awk '{print ($14+$15)/100}' "/proc/$pid/stat")
    PORT=$PORT "$K/stop.sh" >/dev/null 2>&1 || true
    rec "$l" comfyui txt2img512 "$(python3 -c "import json; s=json.load(open('$OUT/comfy_512_20.json')); s={k: s[k] for k in ('wall_s','comfy_exec_s','sampler_s_per_step') if k in s}; s['peak_rss_kb']=$rss; s['cpu_s']=$cpu; print(json.dumps(s))")"
    # The same seed gives the same picture: PSNR of forgeflow's image against ComfyUI's.
    cp "$(ls "$OUT"/out/*.png | head -1)" "$REFPEER_DIR/tmp/ff_512_20.png"
    cp "$OUT/comfy_512_20.png" "$REFPEER_DIR/tmp/comfy_512_20.png"
    echo "# forgeflow's image against ComfyUI's:"
    "$K/chroot.sh" python3 /kit/compare_images.py /refpeer/tmp/comfy_512_20.png /refpeer/tmp/ff_512_20.png
  done
fi
echo "# $(uptime)"
python3 "$(dirname "$0")/side_by_side_summary.py" "$LOG"
