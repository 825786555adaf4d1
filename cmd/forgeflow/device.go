package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// deviceFlags are ComfyUI's device and precision flags (comfy/cli_args.py): which
// device, how models use its memory, and which dtypes models compute in. Parsed and
// validated here and passed down as a deviceOptions value.
type deviceFlags struct {
	cudaDevice int
	// the VRAM group: at most one
	gpuOnly, highVRAM, normalVRAM, lowVRAM, noVRAM, cpu bool
	reserveVRAM                                         float64 // GB; negative: not given
	forceFP16, forceFP32                                bool
	// the UNet and VAE dtype groups: at most one of each
	unet map[string]*bool
	vae  map[string]*bool
}

func (d *deviceFlags) register(fs *flag.FlagSet) {
	fs.Func("cuda-device", "CUDA device `index` to run on; as in ComfyUI also a comma-separated list (forgeflow runs on the first) or \"all\" (device 0)", func(v string) error {
		first, _, _ := strings.Cut(v, ",")
		if strings.EqualFold(strings.TrimSpace(first), "all") {
			d.cudaDevice = 0
			return nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(first))
		if err != nil {
			return fmt.Errorf("not a device index, a comma-separated list of them or \"all\": %q", v)
		}
		d.cudaDevice = n
		return nil
	})
	fs.BoolVar(&d.gpuOnly, "gpu-only", false, "keep every model (text encoders and VAE too) in device memory")
	fs.BoolVar(&d.highVRAM, "highvram", false, "keep models in device memory instead of releasing them after use")
	fs.BoolVar(&d.normalVRAM, "normalvram", false, "place weights in device memory while they fit and stream the rest (the default)")
	fs.BoolVar(&d.lowVRAM, "lowvram", false, "keep only part of each model in device memory, streaming the rest block by block")
	fs.BoolVar(&d.noVRAM, "novram", false, "keep no weights in device memory: stream every block for each use")
	fs.BoolVar(&d.cpu, "cpu", false, "run on the CPU even when a CUDA device is present")
	d.reserveVRAM = -1
	fs.Func("reserve-vram", "device memory in `GB` left free for other programs (default 0.4)", func(v string) error {
		var gb float64
		if _, err := fmt.Sscanf(v, "%g", &gb); err != nil || gb < 0 || math.IsInf(gb, 0) || gb != gb {
			return fmt.Errorf("not a non-negative number of GB: %q", v)
		}
		d.reserveVRAM = gb
		return nil
	})
	fs.BoolVar(&d.forceFP16, "force-fp16", false, "compute in float16 where a device can (ComfyUI compatibility)")
	fs.BoolVar(&d.forceFP32, "force-fp32", false, "compute in float32 (what forgeflow does)")
	d.unet = map[string]*bool{}
	for _, n := range []string{"fp32-unet", "bf16-unet", "fp16-unet", "fp8_e4m3fn-unet", "fp8_e5m2-unet"} {
		d.unet[n] = fs.Bool(n, false, "store the diffusion model's weights in "+strings.TrimSuffix(n, "-unet"))
	}
	d.vae = map[string]*bool{}
	for _, n := range []string{"fp32-vae", "fp16-vae", "bf16-vae"} {
		d.vae[n] = fs.Bool(n, false, "run the VAE in "+strings.TrimSuffix(n, "-vae"))
	}
}

// deviceOptions is what the flags decide, for building the runtime.
type deviceOptions struct {
	// CUDA is false for --cpu: no device is looked for.
	CUDA   bool
	Index  int
	Policy memory.VRAMPolicy
	// UNetDType and VAEDType are the requested storage dtypes ("" when not given);
	// Force is "fp16", "fp32" or "".
	UNetDType, VAEDType, Force string
}

// chosen returns the names of the set flags of a group, sorted.
func chosen(group map[string]bool) []string {
	var out []string
	for n, set := range group {
		if set {
			out = append(out, "--"+n)
		}
	}
	slices.Sort(out)
	return out
}

// options validates the flags (each group allows one choice, as ComfyUI's argparse
// groups do) and returns the options.
func (d *deviceFlags) options() (deviceOptions, error) {
	vram := map[string]bool{"gpu-only": d.gpuOnly, "highvram": d.highVRAM, "normalvram": d.normalVRAM,
		"lowvram": d.lowVRAM, "novram": d.noVRAM, "cpu": d.cpu}
	fp := map[string]bool{"force-fp16": d.forceFP16, "force-fp32": d.forceFP32}
	unet, vae := map[string]bool{}, map[string]bool{}
	for n, p := range d.unet {
		unet[n] = *p
	}
	for n, p := range d.vae {
		vae[n] = *p
	}
	for _, g := range []map[string]bool{vram, fp, unet, vae} {
		if c := chosen(g); len(c) > 1 {
			return deviceOptions{}, fmt.Errorf("%s exclude each other", strings.Join(c, " and "))
		}
	}
	if d.cudaDevice < 0 {
		return deviceOptions{}, fmt.Errorf("--cuda-device %d: a device index is 0 or more", d.cudaDevice)
	}
	o := deviceOptions{CUDA: !d.cpu, Index: d.cudaDevice, Policy: memory.VRAMPolicy{Mode: memory.VRAMNormal, ReserveBytes: -1}}
	switch {
	case d.gpuOnly:
		o.Policy.Mode = memory.VRAMGPUOnly
	case d.highVRAM:
		o.Policy.Mode = memory.VRAMHigh
	case d.lowVRAM:
		o.Policy.Mode = memory.VRAMLow
	case d.noVRAM:
		o.Policy.Mode = memory.VRAMNone
	case d.cpu:
		o.Policy.Mode = memory.VRAMCPU
	}
	if d.reserveVRAM >= 0 {
		o.Policy.ReserveBytes = int64(d.reserveVRAM * (1 << 30))
	}
	if c := chosen(unet); len(c) == 1 {
		o.UNetDType = strings.TrimSuffix(strings.TrimPrefix(c[0], "--"), "-unet")
	}
	if c := chosen(vae); len(c) == 1 {
		o.VAEDType = strings.TrimSuffix(strings.TrimPrefix(c[0], "--"), "-vae")
	}
	if c := chosen(fp); len(c) == 1 {
		o.Force = strings.TrimPrefix(c[0], "--force-")
	}
	return o, nil
}

// device is an opened compute device: the backend for gpu.Options, and what the memory
// manager reports and frees.
type device struct {
	backend gpu.Backend
	stats   memory.Device
	close   func() error
}

// runtime builds the tensor runtime for o from base (the compute flags' options): on the
// CUDA device when one is found (its memory registered with mem, its weights placed by
// mem's VRAM plan), else on the CPU with one log line saying why. The returned close
// releases the device.
func (o deviceOptions) runtime(base gpu.Options, mem *memory.Manager) (*gpu.Runtime, func() error, error) {
	log := base.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.UNetDType != "" || o.VAEDType != "" || o.Force == "fp16" {
		log.Info("precision flags accepted for ComfyUI compatibility; weights keep their stored dtype and compute in float32",
			"unet", o.UNetDType, "vae", o.VAEDType, "force", o.Force)
	}
	nop := func() error { return nil }
	if !o.CUDA {
		rt, err := gpu.New(base)
		return rt, nop, err
	}
	dev, err := openCUDA(o, log)
	if err != nil {
		log.Info("running on the cpu", "why", err.Error())
		rt, err := gpu.New(base)
		return rt, nop, err
	}
	if mem != nil {
		mem.AddDevice(dev.stats)
	}
	base.Backend = dev.backend
	rt, err := gpu.New(base)
	if err != nil {
		dev.close()
		return nil, nop, err
	}
	return rt, dev.close, nil
}
