package memory

import (
	"testing"
)

// fakeGPU is a device with fixed memory and a count of bytes allocated, standing
// in for a GPU in the placement tests.
type fakeGPU struct {
	total, used int64
}

func (d *fakeGPU) DeviceStats() DeviceStats {
	return DeviceStats{Name: "fake", Type: "cuda", VRAMTotal: d.total, VRAMFree: d.total - d.used}
}

// load places blocks in order through p, allocating the resident ones on d, and returns
// the resident and streamed bytes.
func (d *fakeGPU) load(p *Placer, blocks []int64) (resident, streamed int64) {
	for _, n := range blocks {
		if p.Place(n, d.total-d.used) {
			d.used += n
			resident += n
		} else {
			streamed += n
		}
	}
	return resident, streamed
}

// sdxlBlocks approximates an fp16 SDXL UNet: 5 GB in blocks of 10 to 200 MB.
func sdxlBlocks() []int64 {
	var b []int64
	for i := 0; i < 60; i++ {
		b = append(b, int64(10+i*5)<<20)
	}
	return b
}

func TestPlanVRAM(t *testing.T) {
	const gib = 1 << 30
	dev := DeviceStats{VRAMTotal: 4 * gib}
	lowCap := int64(float64(dev.VRAMTotal-defaultReserve-inferenceMargin) / 1.3)
	cases := []struct {
		name        string
		policy      VRAMPolicy
		noWeights   bool
		cap         int64
		reserveOver int64 // reserve must be at least this
	}{
		{"normal", VRAMPolicy{Mode: VRAMNormal, ReserveBytes: -1}, false, 0, defaultReserve + inferenceMargin},
		{"high", VRAMPolicy{Mode: VRAMHigh, ReserveBytes: -1}, false, 0, defaultReserve},
		{"gpu-only-reserve", VRAMPolicy{Mode: VRAMGPUOnly, ReserveBytes: gib}, false, 0, gib},
		{"low", VRAMPolicy{Mode: VRAMLow, ReserveBytes: -1}, false, lowCap, defaultReserve + inferenceMargin},
		{"none", VRAMPolicy{Mode: VRAMNone, ReserveBytes: 0}, true, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanVRAM(tc.policy, dev)
			if p.NoWeights != tc.noWeights || p.WeightBytes != tc.cap || p.ReserveBytes < tc.reserveOver || p.Mode != tc.policy.Mode {
				t.Errorf("plan %+v", p)
			}
		})
	}
	if p := PlanVRAM(VRAMPolicy{Mode: VRAMLow}, DeviceStats{VRAMTotal: gib}); p.WeightBytes != minLowVRAM {
		t.Errorf("a tiny card's lowvram cap is %d", p.WeightBytes)
	}
}

func TestPlacerOnFakeDevice(t *testing.T) {
	const gib = 1 << 30
	blocks := sdxlBlocks()
	var total int64
	for _, b := range blocks {
		total += b
	}
	for _, tc := range []struct {
		name     string
		mode     VRAMMode
		devTotal int64
		check    func(t *testing.T, plan VRAMPlan, resident, streamed int64, d *fakeGPU)
	}{
		{"sdxl-low-4gb", VRAMLow, 4 * gib, func(t *testing.T, plan VRAMPlan, resident, streamed int64, d *fakeGPU) {
			if resident == 0 || streamed == 0 || resident > plan.WeightBytes {
				t.Errorf("resident %d streamed %d cap %d", resident, streamed, plan.WeightBytes)
			}
			if d.total-d.used < plan.ReserveBytes {
				t.Errorf("free %d below the reserve %d", d.total-d.used, plan.ReserveBytes)
			}
		}},
		{"sdxl-normal-4gb", VRAMNormal, 4 * gib, func(t *testing.T, plan VRAMPlan, resident, streamed int64, d *fakeGPU) {
			if streamed == 0 || d.total-d.used < plan.ReserveBytes {
				t.Errorf("resident %d streamed %d free %d", resident, streamed, d.total-d.used)
			}
		}},
		{"sdxl-normal-24gb", VRAMNormal, 24 * gib, func(t *testing.T, plan VRAMPlan, resident, streamed int64, d *fakeGPU) {
			if streamed != 0 || resident != total {
				t.Errorf("everything should fit: resident %d streamed %d", resident, streamed)
			}
		}},
		{"sdxl-none", VRAMNone, 24 * gib, func(t *testing.T, plan VRAMPlan, resident, streamed int64, d *fakeGPU) {
			if resident != 0 || streamed != total {
				t.Errorf("novram placed %d", resident)
			}
		}},
		{"sdxl-high-4gb", VRAMHigh, 4 * gib, func(t *testing.T, plan VRAMPlan, resident, streamed int64, d *fakeGPU) {
			if d.total-d.used < plan.ReserveBytes || resident < 3*gib {
				t.Errorf("highvram resident %d, free %d", resident, d.total-d.used)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeGPU{total: tc.devTotal}
			plan := PlanVRAM(VRAMPolicy{Mode: tc.mode, ReserveBytes: -1}, d.DeviceStats())
			p := NewPlacer(plan)
			resident, streamed := d.load(p, blocks)
			if p.Placed() != resident {
				t.Errorf("placer counted %d, device got %d", p.Placed(), resident)
			}
			tc.check(t, plan, resident, streamed, d)
			p.Release(resident)
			if p.Placed() != 0 {
				t.Errorf("after release: %d", p.Placed())
			}
		})
	}
}
