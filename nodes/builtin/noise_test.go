package builtin

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/nodes"
)

func TestImageAddNoise(t *testing.T) {
	src := filled(1, 4, 5, 3, 0.5) // 60 values: torch's 16-wide block path with a tail
	noise := make([]float32, 60)
	rng.New(42).Randn(noise)
	want := make([]float32, 60)
	for i, n := range noise {
		want[i] = clamp01(0.5 + 0.25*n)
	}
	got := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(42), "strength": 0.25}).Outputs[0].(*Image)
	checkPix(t, got.Pix, want, 0)
	t.Run("same seed, same noise", func(t *testing.T) {
		again := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(42), "strength": 0.25}).Outputs[0].(*Image)
		checkPix(t, again.Pix, got.Pix, 0)
	})
	t.Run("other seed differs", func(t *testing.T) {
		other := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(43), "strength": 0.25}).Outputs[0].(*Image)
		same := 0
		for i := range other.Pix {
			if other.Pix[i] == got.Pix[i] {
				same++
			}
		}
		if same > 6 {
			t.Fatalf("%d of 60 values equal across seeds", same)
		}
	})
	t.Run("zero strength is the image", func(t *testing.T) {
		im := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(1), "strength": 0.0}).Outputs[0].(*Image)
		checkPix(t, im.Pix, src.Pix, 0)
	})
	t.Run("clipped to [0, 1]", func(t *testing.T) {
		im := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": filled(1, 8, 8, 3, 0.99), "seed": int64(7), "strength": 1.0}).Outputs[0].(*Image)
		for i, v := range im.Pix {
			if v < 0 || v > 1 {
				t.Fatalf("value %d = %v", i, v)
			}
		}
	})
}

func TestSeedIn(t *testing.T) {
	tests := []struct {
		v    any
		want uint64
		ok   bool
	}{
		{int64(5), 5, true}, {int64(-1), 0, false}, {float64(1 << 63), 1 << 63, true}, {1.5, 0, false},
		{math.Inf(1), 0, false}, {json.Number("18446744073709551615"), math.MaxUint64, true}, {"x", 0, false}, {nil, 0, false},
	}
	for _, tc := range tests {
		got, err := seedIn(nodes.Inputs{"seed": tc.v}, "seed")
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("seedIn(%#v) = %d, %v; want %d, ok %v", tc.v, got, err, tc.want, tc.ok)
		}
	}
}
