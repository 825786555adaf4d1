package memory

import (
	"slices"
	"time"
)

// Device is a compute device that reports its memory (a gpu backend registers one per
// device with AddDevice). The CPU is not a Device: its memory is the RAM.
type Device interface {
	DeviceStats() DeviceStats
}

// Freer is implemented by devices that can return cached memory (a CUDA allocator's
// pool) on FreeMemory.
type Freer interface {
	FreeCache()
}

// DeviceStats are one device's numbers, as ComfyUI's /system_stats "devices" entries
// carry them.
type DeviceStats struct {
	Name      string
	Type      string // "cuda"
	Index     int
	VRAMTotal int64
	VRAMFree  int64
	// TorchVRAMTotal and TorchVRAMFree are what our allocator holds and has free in its
	// pool (torch's reserved and reserved-minus-active in ComfyUI).
	TorchVRAMTotal int64
	TorchVRAMFree  int64
}

// ModelStats describe one cached model.
type ModelStats struct {
	Path     string
	Part     string
	Size     int64 // file size
	Bytes    int64 // memory held
	Refs     int   // handles in use
	LastUsed time.Time
	LoadTime time.Duration
}

// Stats is a snapshot of every memory number.
type Stats struct {
	RAMTotal  int64 // 0 when the OS did not say
	RAMFree   int64 // available RAM
	RAMBudget int64 // model cache budget, negative for none
	ModelRAM  int64 // bytes held by cached models (and evicted ones still in use)
	Devices   []DeviceStats
	Models    []ModelStats // most recently used first
}

// ComfyUIDevices returns the "devices" list of ComfyUI's /system_stats: the registered
// devices, or, on a CPU-only run, one "cpu" entry whose VRAM numbers are the RAM ones
// (ComfyUI's model_management reports the CPU that way; its index is null, which
// Index -1 stands for here).
func (s Stats) ComfyUIDevices() []DeviceStats {
	if len(s.Devices) > 0 {
		return s.Devices
	}
	return []DeviceStats{{Name: "cpu", Type: "cpu", Index: -1,
		VRAMTotal: s.RAMTotal, VRAMFree: s.RAMFree, TorchVRAMTotal: s.RAMTotal, TorchVRAMFree: s.RAMFree}}
}

// AddDevice registers a device whose memory Stats reports.
func (m *Manager) AddDevice(d Device) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices = append(m.devices, d)
}

// Stats returns current numbers. A failure to read RAM numbers leaves them zero (and
// is logged): statistics must not fail a request.
func (m *Manager) Stats() Stats {
	var s Stats
	if ram, err := ReadMeminfo(m.meminfo); err == nil {
		s.RAMTotal, s.RAMFree = ram.Total, ram.Available
	} else {
		m.log.Warn("reading ram numbers", "err", err)
	}
	m.mu.Lock()
	s.RAMBudget = m.budget
	s.ModelRAM = m.used
	devs := slices.Clone(m.devices)
	type ranked struct {
		ms   ModelStats
		tick uint64
	}
	var rs []ranked
	for _, e := range m.entries {
		if !isReady(e) {
			continue
		}
		rs = append(rs, ranked{ModelStats{
			Path: e.id.Path, Part: e.id.Part, Size: e.id.Size, Bytes: e.val.Bytes,
			Refs: e.refs, LastUsed: e.usedAt, LoadTime: e.loadDur,
		}, e.lastUse})
	}
	m.mu.Unlock()
	slices.SortFunc(rs, func(a, b ranked) int {
		switch {
		case a.tick > b.tick:
			return -1
		case a.tick < b.tick:
			return 1
		}
		return 0
	})
	for _, r := range rs {
		s.Models = append(s.Models, r.ms)
	}
	for _, d := range devs {
		s.Devices = append(s.Devices, d.DeviceStats())
	}
	return s
}

// AvailableRAM reads the RAM available now (MemAvailable), for callers that poll it
// under memory pressure (the executor's cache trimming takes this method as its
// AvailableRAM function).
func (m *Manager) AvailableRAM() (uint64, error) {
	ram, err := ReadMeminfo(m.meminfo)
	if err != nil {
		return 0, err
	}
	return uint64(ram.Available), nil
}
