#!/usr/bin/env bash
# make test-cuda: everything that only a CUDA device can verify, in one run, with a report.
#
#   tools/cuda/test-cuda.sh          build (needs Go) then run (needs a CUDA device)
#   tools/cuda/test-cuda.sh build    only build the binaries into bin/cuda (a CPU machine)
#   tools/cuda/test-cuda.sh run      only run, from the binaries in bin/cuda (no Go needed)
#
# The run: the cuda package's tests (NVRTC compile, cache), the cross-backend op table on
# the device (gpu.TestOps, every op case, cpu results as reference), the GPU-vs-CPU image
# check (SD1.5 and SDXL, tiny and full-size random checkpoints, >= 40 dB), and the
# benchmarks (forgeflow bench unet/vae --device cuda). It writes bin/cuda/report/report.md,
# results.jsonl and one log per step, and exits non-zero when any step failed. Expected
# to take 5-8 minutes on an H100 machine with 16 cores (not yet timed), most of it writing the full-size
# checkpoints and sampling them on the CPU for the comparison.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${FORGEFLOW_CUDA_BIN:-$root/bin/cuda}
out=${FORGEFLOW_CUDA_OUT:-$bin/report}
work=${FORGEFLOW_CUDA_WORK:-${TMPDIR:-/tmp}/forgeflow-cuda}
mode=${1:-all}

build() {
	mkdir -p "$bin"
	echo "building into $bin"
	export CGO_ENABLED=0
	go build -ldflags="-s -w" -o "$bin/forgeflow" ./cmd/forgeflow &&
		go test -c -ldflags="-s -w" -o "$bin/gpu.test" ./gpu &&
		go test -c -ldflags="-s -w" -o "$bin/cuda.test" ./gpu/cuda &&
		go test -c -ldflags="-s -w" -o "$bin/cudacheck.test" ./tools/cuda
}

failed=0
declare -a summary

# step NAME TIMEOUT_S COMMAND...: runs in a subshell, logs to $out/NAME.log
step() {
	local name=$1 limit=$2
	shift 2
	local t0=$SECONDS
	timeout "$limit" bash -c "$*" >"$out/$name.log" 2>&1
	local rc=$?
	local st=ok
	if [ $rc -ne 0 ]; then
		st="FAILED (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))"
		failed=1
	fi
	summary+=("| $name | $st | $((SECONDS - t0)) s |")
	echo "$name: $st ($((SECONDS - t0)) s)"
}

run() {
	for f in forgeflow gpu.test cuda.test cudacheck.test; do
		[ -x "$bin/$f" ] || { echo "missing $bin/$f: run '$0 build' on a machine with Go first"; exit 2; }
	done
	rm -rf "$out"
	mkdir -p "$out" "$work"
	export FORGEFLOW_REQUIRE_CUDA=1 FORGEFLOW_CUDA_REPORT=$out/results.jsonl FORGEFLOW_CUDA_CACHE=$out/kernels
	{
		echo "date: $(date -u +%FT%TZ)"
		echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
		echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
		echo "load: $(uptime)"
		command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv,noheader
	} >"$out/machine.txt" 2>&1

	# the full-size random checkpoints (F16, real key names), written while the op table
	# runs; FORGEFLOW_CUDA_FULL=0 skips them and what needs them (a quick or dry run)
	full=${FORGEFLOW_CUDA_FULL:-1}
	sd15=$work/sd15.safetensors sdxl=$work/sdxl.safetensors
	synth() { [ -s "$2" ] || { "$bin/forgeflow" synth --family "$1" --out "$2.tmp" && mv -f "$2.tmp" "$2"; }; }
	pids=()
	if [ "$full" = 1 ]; then
		synth sd15 "$sd15" >"$out/synth-sd15.log" 2>&1 &
		pids+=($!)
		synth sdxl "$sdxl" >"$out/synth-sdxl.log" 2>&1 &
		pids+=($!)
	fi

	step cuda-unit 300 "cd gpu/cuda && '$bin/cuda.test' -test.v -test.timeout 290s"
	step op-table 300 "cd gpu && '$bin/gpu.test' -test.run 'TestCUDADevice|TestOpTable|TestOps\$|TestGoldenGGUFLinear' -test.v -test.timeout 290s"
	for p in "${pids[@]}"; do wait "$p" || true; done
	if [ "$full" = 1 ]; then
		export FORGEFLOW_CUDA_SD15=$sd15 FORGEFLOW_CUDA_SDXL=$sdxl
	fi
	step e2e 420 "cd tools/cuda && '$bin/cudacheck.test' -test.run TestGPUMatchesCPU -test.v -test.timeout 410s"
	if [ "$full" = 1 ]; then
		bench="'$bin/forgeflow' bench"
		step bench-sd15-unet-512 180 "$bench unet --device cuda --ckpt '$sd15' --width 512 --height 512 --batch 2 --runs 10 --json"
		step bench-sdxl-unet-1024 240 "$bench unet --device cuda --ckpt '$sdxl' --width 1024 --height 1024 --batch 2 --runs 5 --json"
		step bench-vae-decode-1024 180 "$bench vae --device cuda --ckpt '$sd15' --width 1024 --height 1024 --runs 3 --json"
		step bench-sdxl-unet-1024-lowvram 240 "$bench unet --device cuda --lowvram --ckpt '$sdxl' --width 1024 --height 1024 --batch 2 --runs 2 --json"
	fi

	report >"$out/report.md"
	cat "$out/report.md"
	return $failed
}

report() {
	echo "# forgeflow CUDA check"
	echo
	echo '```'
	cat "$out/machine.txt"
	grep -h "cuda device" "$out/op-table.log" 2>/dev/null | head -1
	echo '```'
	echo
	echo "| step | result | time |"
	echo "|---|---|---|"
	printf '%s\n' "${summary[@]}"
	echo
	for name in $(printf '%s\n' "${summary[@]}" | grep FAILED | cut -d'|' -f2); do
		echo "### $name failed: end of $name.log"
		echo '```'
		grep -v -- '--- PASS\|^=== ' "$out/$name.log" | tail -25
		echo '```'
		echo
	done
	echo "## Op table on the device"
	echo
	local pass fail
	pass=$(grep -c -- '--- PASS: TestOps/cuda/' "$out/op-table.log" 2>/dev/null)
	fail=$(grep -c -- '--- FAIL: TestOps/cuda/' "$out/op-table.log" 2>/dev/null)
	echo "cuda cases: $pass passed, $fail failed"
	grep -- '--- FAIL: TestOps/cuda/' "$out/op-table.log" 2>/dev/null | sed 's/^ */- /'
	echo
	echo "CPU fallbacks logged:"
	grep -ho 'op falls back to cpu.*' "$out"/*.log 2>/dev/null | sort | uniq -c | sed 's/^/    /'
	echo
	echo "## GPU vs CPU images"
	echo
	grep -h '"check":"e2e"' "$out/results.jsonl" 2>/dev/null | sed 's/^/    /'
	grep -h 'PSNR' "$out/e2e.log" 2>/dev/null | sed 's/^ */- /'
	echo
	echo "## Benchmarks (median seconds per evaluation; it/s = 1/median)"
	echo
	for f in "$out"/bench-*.log; do
		[ -f "$f" ] || continue
		local med dev
		med=$(grep -o '"median_s": [0-9.e+-]*' "$f" | head -1 | awk '{print $2}')
		dev=$(grep -o '"device": "[^"]*"' "$f" | head -1 | cut -d'"' -f4)
		if [ -n "$med" ]; then
			echo "- $(basename "$f" .log): median $med s = $(awk -v m="$med" 'BEGIN{printf "%.2f", 1/m}') it/s on $dev"
		else
			echo "- $(basename "$f" .log): no result (see the log)"
		fi
	done
}

case $mode in
build) build ;;
run) run ;;
all) build && run ;;
*)
	echo "usage: $0 [build|run]"
	exit 2
	;;
esac
