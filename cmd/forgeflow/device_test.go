package main

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/memory"
)

func parseDevice(t *testing.T, args ...string) (deviceOptions, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var d deviceFlags
	d.register(fs)
	if err := fs.Parse(args); err != nil {
		return deviceOptions{}, err
	}
	return d.options()
}

func TestDeviceFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    deviceOptions
		wantErr string
	}{
		{"default", nil, deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMNormal, ReserveBytes: -1}}, ""},
		{"cpu", []string{"--cpu"}, deviceOptions{CUDA: false, Policy: memory.VRAMPolicy{Mode: memory.VRAMCPU, ReserveBytes: -1}}, ""},
		{"device-1-lowvram", []string{"--cuda-device", "1", "--lowvram"},
			deviceOptions{CUDA: true, Index: 1, Policy: memory.VRAMPolicy{Mode: memory.VRAMLow, ReserveBytes: -1}}, ""},
		{"novram-reserve", []string{"--novram", "--reserve-vram", "1.5"},
			deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMNone, ReserveBytes: 3 << 29}}, ""},
		{"highvram", []string{"--highvram"}, deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMHigh, ReserveBytes: -1}}, ""},
		{"gpu-only", []string{"--gpu-only", "--reserve-vram=0"}, deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMGPUOnly, ReserveBytes: 0}}, ""},
		{"normalvram", []string{"--normalvram"}, deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMNormal, ReserveBytes: -1}}, ""},
		{"precision", []string{"--fp8_e4m3fn-unet", "--bf16-vae", "--force-fp32"},
			deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMNormal, ReserveBytes: -1}, UNetDType: "fp8_e4m3fn", VAEDType: "bf16", Force: "fp32"}, ""},
		{"fp16-unet", []string{"--fp16-unet", "--fp16-vae", "--force-fp16"},
			deviceOptions{CUDA: true, Policy: memory.VRAMPolicy{Mode: memory.VRAMNormal, ReserveBytes: -1}, UNetDType: "fp16", VAEDType: "fp16", Force: "fp16"}, ""},
		{"two-vram-modes", []string{"--lowvram", "--highvram"}, deviceOptions{}, "--highvram and --lowvram exclude each other"},
		{"cpu-and-gpu-only", []string{"--cpu", "--gpu-only"}, deviceOptions{}, "--cpu and --gpu-only exclude each other"},
		{"two-forces", []string{"--force-fp16", "--force-fp32"}, deviceOptions{}, "exclude each other"},
		{"two-unet-dtypes", []string{"--bf16-unet", "--fp16-unet"}, deviceOptions{}, "--bf16-unet and --fp16-unet exclude each other"},
		{"two-vae-dtypes", []string{"--fp32-vae", "--bf16-vae"}, deviceOptions{}, "exclude each other"},
		{"negative-device", []string{"--cuda-device", "-1"}, deviceOptions{}, "--cuda-device -1"},
		{"bad-reserve", []string{"--reserve-vram", "lots"}, deviceOptions{}, "not a non-negative number"},
		{"negative-reserve", []string{"--reserve-vram", "-2"}, deviceOptions{}, "not a non-negative number"},
		{"nan-reserve", []string{"--reserve-vram", "NaN"}, deviceOptions{}, "not a non-negative number"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDevice(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("options %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDeviceRuntime checks the runtime each choice gets: --cpu never looks for a device;
// otherwise the CUDA device where one opens, else the CPU with one log line saying why.
func TestDeviceRuntime(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	o, _ := parseDevice(t, "--cpu")
	rt, closeDev, err := o.runtime(gpu.Options{Logger: log}, nil)
	if err != nil || rt.Backend().Name() != "cpu" {
		t.Fatalf("--cpu: %v %v", rt, err)
	}
	closeDev()
	if buf.Len() != 0 {
		t.Errorf("--cpu logged %q", buf.String())
	}

	mem := memory.New(memory.Options{RAMBudget: -1})
	o, _ = parseDevice(t, "--lowvram", "--fp16-unet")
	rt, closeDev, err = o.runtime(gpu.Options{Logger: log}, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDev()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.Contains(lines[0], "precision flags accepted") {
		t.Errorf("no precision notice: %q", lines)
	}
	switch rt.Backend().Name() {
	case "cpu":
		if len(lines) != 2 || !strings.Contains(lines[1], "running on the cpu") || !strings.Contains(lines[1], "cuda:") {
			t.Errorf("fallback not logged in one line: %q", lines)
		}
		if devs := mem.Stats().ComfyUIDevices(); len(devs) != 1 || devs[0].Type != "cpu" {
			t.Errorf("devices %+v", devs)
		}
	case "cuda":
		if devs := mem.Stats().Devices; len(devs) != 1 || devs[0].Type != "cuda" || devs[0].VRAMTotal <= 0 || !strings.HasPrefix(devs[0].Name, "cuda:0 ") {
			t.Errorf("devices %+v", devs)
		}
	default:
		t.Errorf("backend %s", rt.Backend().Name())
	}
}
