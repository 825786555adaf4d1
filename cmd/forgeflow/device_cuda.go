//go:build linux && !nocuda

package main

import (
	"fmt"
	"log/slog"

	"github.com/forgeflow/forgeflow/gpu/cuda"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// openCUDA opens the CUDA device of o with its weights placed by the VRAM plan that o's
// policy gives for the device's memory.
func openCUDA(o deviceOptions, log *slog.Logger) (*device, error) {
	be, err := cuda.Open(cuda.Options{Device: o.Index, Logger: log})
	if err != nil {
		return nil, err
	}
	cd := cudaDevice{be}
	plan := memory.PlanVRAM(o.Policy, cd.DeviceStats())
	be.SetPlacement(memory.NewPlacer(plan))
	info := be.Info()
	log.Info("cuda device", "index", info.Index, "name", info.Name, "sm", info.CC, "vram_gib", fmt.Sprintf("%.1f", float64(info.TotalBytes)/(1<<30)),
		"driver", info.DriverVersion, "nvrtc", info.NVRTC, "vram_mode", plan.Mode.String(), "weight_cap", plan.WeightBytes, "reserve", plan.ReserveBytes)
	return &device{backend: be, stats: cd, close: be.Close}, nil
}

// cudaDevice reports a CUDA backend's memory as ComfyUI's /system_stats does
// (model_management.get_total_memory/get_free_memory with torch_*_too): the device's
// free memory plus what the pool holds idle, and the pool's own numbers as torch's.
type cudaDevice struct{ be *cuda.Backend }

func (d cudaDevice) DeviceStats() memory.DeviceStats {
	info, ms := d.be.Info(), d.be.MemoryStats()
	idle := int64(ms.Reserved - ms.Active)
	return memory.DeviceStats{
		Name: fmt.Sprintf("cuda:%d %s : native", info.Index, info.Name), Type: "cuda", Index: info.Index,
		VRAMTotal: int64(ms.Total), VRAMFree: int64(ms.Free) + idle,
		TorchVRAMTotal: int64(ms.Reserved), TorchVRAMFree: idle,
	}
}

func (d cudaDevice) FreeCache() { d.be.FreeCache() }
