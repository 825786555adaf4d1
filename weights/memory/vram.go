package memory

import (
	"fmt"
	"sync"
)

// VRAMMode is how models use a device's memory: ComfyUI's VRAM states
// (comfy/model_management.py, VRAMState), chosen with --gpu-only, --highvram,
// --normalvram, --lowvram, --novram or --cpu.
type VRAMMode int

const (
	// VRAMNormal keeps weights on the device while they fit and streams the rest
	// (ComfyUI's NORMAL_VRAM, which falls back to partial loading the same way).
	VRAMNormal VRAMMode = iota
	// VRAMHigh keeps every model on the device, with only the reserve held back.
	VRAMHigh
	// VRAMGPUOnly is VRAMHigh for everything, text encoders and VAE included.
	VRAMGPUOnly
	// VRAMLow caps the weights on the device so that most memory stays free for
	// activations; the rest of each model is streamed block by block from host memory.
	VRAMLow
	// VRAMNone keeps every weight in host memory and streams each for each use.
	VRAMNone
	// VRAMCPU runs on the CPU: no device is opened.
	VRAMCPU
)

var vramModeNames = [...]string{"normal", "high", "gpu-only", "low", "none", "cpu"}

func (m VRAMMode) String() string {
	if m >= 0 && int(m) < len(vramModeNames) {
		return vramModeNames[m]
	}
	return fmt.Sprintf("VRAMMode(%d)", int(m))
}

// VRAMPolicy is what the command line says about device memory.
type VRAMPolicy struct {
	Mode VRAMMode
	// ReserveBytes is kept free for other programs (--reserve-vram); negative means
	// the default, ComfyUI's EXTRA_RESERVED_VRAM of 400 MB.
	ReserveBytes int64
}

// VRAMPlan is how weights may use one device: what the backend is told.
type VRAMPlan struct {
	Mode VRAMMode
	// NoWeights keeps every weight in host memory (streamed per use).
	NoWeights bool
	// WeightBytes caps the weight bytes on the device; 0 means no cap other than
	// memory itself.
	WeightBytes int64
	// ReserveBytes is device memory weights never take: the policy's reserve plus,
	// except in the high modes, room for a sampling step's activations.
	ReserveBytes int64
}

const (
	// defaultReserve is ComfyUI's EXTRA_RESERVED_VRAM on Linux.
	defaultReserve = 400 << 20
	// inferenceMargin is room for activations kept free of weights in the normal and
	// low modes (ComfyUI's minimum_inference_memory, 0.8 GiB, plus the same margin
	// again for the larger attention and VAE activations forgeflow keeps in float32).
	inferenceMargin = 1600 << 20
	minLowVRAM      = 64 << 20
)

// PlanVRAM turns the policy into limits for a device with the given memory. In the
// low mode the cap follows ComfyUI's lowvram_model_memory: what is left after the
// reserve and the inference margin, divided by 1.3, at least 64 MiB; so an SDXL UNet
// (5 GB in fp16) runs on a 4 GB card with about 1.5 GB of it resident and the rest
// streamed. In the normal mode there is no fixed cap: the backend keeps placing weights
// while free memory stays above the reserve, which is the same rule applied as memory
// actually is.
func PlanVRAM(p VRAMPolicy, dev DeviceStats) VRAMPlan {
	reserve := p.ReserveBytes
	if reserve < 0 {
		reserve = defaultReserve
	}
	plan := VRAMPlan{Mode: p.Mode, ReserveBytes: reserve}
	switch p.Mode {
	case VRAMHigh, VRAMGPUOnly:
	case VRAMNone, VRAMCPU:
		plan.NoWeights = true
	case VRAMLow:
		plan.ReserveBytes += inferenceMargin
		plan.WeightBytes = max(int64(float64(dev.VRAMTotal-reserve-inferenceMargin)/1.3), minLowVRAM)
	default:
		plan.ReserveBytes += inferenceMargin
	}
	return plan
}

// Placer applies a plan weight by weight as a backend loads them: each weight goes on
// the device while it fits the plan's cap and the device's free memory less the reserve;
// one that does not fit stays in host memory and is streamed for each use. Models load
// block by block in the order they run, so the first blocks are resident and the rest
// stream (Forge's "GPU weights"). It is safe for concurrent use.
type Placer struct {
	plan   VRAMPlan
	mu     sync.Mutex
	placed int64
}

// NewPlacer returns a Placer for plan.
func NewPlacer(plan VRAMPlan) *Placer { return &Placer{plan: plan} }

// Place reports whether a weight of n bytes goes on the device, which has freeBytes
// available now, and counts it when it does.
func (p *Placer) Place(n, freeBytes int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plan.NoWeights || (p.plan.WeightBytes > 0 && p.placed+n > p.plan.WeightBytes) || freeBytes-n < p.plan.ReserveBytes {
		return false
	}
	p.placed += n
	return true
}

// Release gives back a placed weight's n bytes (its model was freed).
func (p *Placer) Release(n int64) {
	p.mu.Lock()
	p.placed -= n
	p.mu.Unlock()
}

// Placed is the weight bytes on the device now.
func (p *Placer) Placed() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.placed
}

// Plan returns the plan the Placer applies.
func (p *Placer) Plan() VRAMPlan { return p.plan }
