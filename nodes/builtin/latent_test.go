package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/nodes"
)

// latentOf builds a latent whose value at index i is f(i).
func latentOf(t *testing.T, f func(i int) float32, shape ...int) *sd.Latent {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = f(i)
	}
	return &sd.Latent{Samples: tens(t, v, shape...)}
}

func idx(i int) float32 { return float32(i) }

func TestEmptyLatentImage(t *testing.T) {
	v, shape := latentValues(t, out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(100), "height": int64(64), "batch_size": int64(3)}))
	if shape[0] != 3 || shape[1] != 4 || shape[2] != 8 || shape[3] != 12 {
		t.Fatalf("shape %v, want [3 4 8 12]", shape)
	}
	for _, x := range v {
		if x != 0 {
			t.Fatal("non-zero value")
		}
	}
	if _, err := run(t, Options{}, nil, "EmptyLatentImage", nodes.Inputs{"width": int64(8), "height": int64(64), "batch_size": int64(1)}); err == nil {
		t.Fatal("width 8: no error")
	}
}

func TestLatentUpscaleNodes(t *testing.T) {
	l := latentOf(t, idx, 1, 4, 8, 16)
	src, _ := latentValues(t, l)
	// width only: height follows the aspect ratio (64 px wide latent of 16 → height 32 px).
	v, shape := latentValues(t, out0(t, "LatentUpscale", nodes.Inputs{"samples": l, "upscale_method": "bilinear", "width": int64(256), "height": int64(0), "crop": "disabled"}))
	if shape[2] != 16 || shape[3] != 32 {
		t.Fatalf("shape %v, want 16x32", shape)
	}
	want, _ := resample.Upscale(src, 1, 4, 8, 16, 32, 16, "bilinear", "disabled")
	if diffMax(v, want) != 0 {
		t.Fatal("LatentUpscale differs from common_upscale")
	}
	// Both zero: the same latent.
	if out0(t, "LatentUpscale", nodes.Inputs{"samples": l, "upscale_method": "area", "width": int64(0), "height": int64(0), "crop": "center"}) != l {
		t.Fatal("0x0 upscale is not the input")
	}
	// Sides below 64 px are raised to 64 (8 latent pixels).
	_, shape = latentValues(t, out0(t, "LatentUpscale", nodes.Inputs{"samples": l, "upscale_method": "nearest-exact", "width": int64(16), "height": int64(16), "crop": "center"}))
	if shape[2] != 8 || shape[3] != 8 {
		t.Fatalf("min size shape %v", shape)
	}
	// scale_by rounds half to even: 16·1.25 = 20, 8·1.25 = 10; 8·0.5625 = 4.5 → 4.
	_, shape = latentValues(t, out0(t, "LatentUpscaleBy", nodes.Inputs{"samples": l, "upscale_method": "bislerp", "scale_by": 1.25}))
	if shape[2] != 10 || shape[3] != 20 {
		t.Fatalf("scale_by shape %v", shape)
	}
	_, shape = latentValues(t, out0(t, "LatentUpscaleBy", nodes.Inputs{"samples": l, "upscale_method": "area", "scale_by": 0.5625}))
	if shape[2] != 4 || shape[3] != 9 {
		t.Fatalf("scale_by 0.5625 shape %v, want 4x9", shape)
	}
	if _, err := run(t, Options{}, nil, "LatentUpscaleBy", nodes.Inputs{"samples": l, "upscale_method": "lanczos", "scale_by": 2.0}); err == nil {
		t.Fatal("lanczos on a latent: no error")
	}
}

func TestLatentFromBatch(t *testing.T) {
	l := latentOf(t, idx, 4, 1, 2, 2)
	m := make([]float32, 2*2*2)
	for i := range m {
		m[i] = float32(i / 4) // mask 0 all zeros, mask 1 all ones
	}
	l.NoiseMask = tens(t, m, 2, 1, 2, 2)
	out := out0(t, "LatentFromBatch", nodes.Inputs{"samples": l, "batch_index": int64(2), "length": int64(5)}).(*sd.Latent)
	v, shape := latentValues(t, out)
	if shape[0] != 2 || v[0] != 8 || v[7] != 15 {
		t.Fatalf("sub-batch %v %v", shape, v)
	}
	if len(out.BatchIndex) != 2 || out.BatchIndex[0] != 2 || out.BatchIndex[1] != 3 {
		t.Fatalf("batch_index %v", out.BatchIndex)
	}
	// Masks repeat to the batch (0,1,0,1) before slicing: items 2,3 → masks 0,1.
	if mv := vals(t, out.NoiseMask); mv[0] != 0 || mv[4] != 1 || len(mv) != 8 {
		t.Fatalf("mask %v", mv)
	}
	// batch_index past the end picks the last item; an existing batch_index is sliced.
	last := out0(t, "LatentFromBatch", nodes.Inputs{"samples": out, "batch_index": int64(9), "length": int64(1)}).(*sd.Latent)
	if len(last.BatchIndex) != 1 || last.BatchIndex[0] != 3 {
		t.Fatalf("batch_index %v", last.BatchIndex)
	}
}

func TestRepeatLatentBatch(t *testing.T) {
	l := latentOf(t, idx, 2, 1, 1, 2)
	l.BatchIndex = []int{3, 5}
	out := out0(t, "RepeatLatentBatch", nodes.Inputs{"samples": l, "amount": int64(3)}).(*sd.Latent)
	v, shape := latentValues(t, out)
	if shape[0] != 6 || diffMax(v, []float32{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}) != 0 {
		t.Fatalf("repeat %v %v", shape, v)
	}
	// offset = max − min + 1 = 3.
	want := []int{3, 5, 6, 8, 9, 11}
	for i := range want {
		if out.BatchIndex[i] != want[i] {
			t.Fatalf("batch_index %v, want %v", out.BatchIndex, want)
		}
	}
}

func TestLatentComposite(t *testing.T) {
	to := latentOf(t, func(int) float32 { return 0 }, 1, 1, 4, 4)
	from := latentOf(t, func(int) float32 { return 1 }, 1, 1, 4, 4)
	// Paste at (8, 8) px = (1, 1) latent: the from latent is cut to 3×3.
	v, _ := latentValues(t, out0(t, "LatentComposite", nodes.Inputs{"samples_to": to, "samples_from": from, "x": int64(8), "y": int64(8), "feather": int64(0)}))
	for y := 0; y < 4; y++ {
		for x := 0; x < 4; x++ {
			want := float32(0)
			if x >= 1 && y >= 1 {
				want = 1
			}
			if v[y*4+x] != want {
				t.Fatalf("(%d,%d) = %v, want %v", x, y, v[y*4+x], want)
			}
		}
	}
	// feather 16 px = 2: the edges off the border ramp 0.5, 1 (x and y start at 1; the
	// far edges touch the border and stay sharp).
	v, _ = latentValues(t, out0(t, "LatentComposite", nodes.Inputs{"samples_to": to, "samples_from": from, "x": int64(8), "y": int64(8), "feather": int64(16)}))
	if v[1*4+1] != 0.25 || v[1*4+2] != 0.5 || v[2*4+2] != 1 || v[3*4+3] != 1 {
		t.Fatalf("feathered %v", v)
	}
	// Outside the target: unchanged copy.
	v, _ = latentValues(t, out0(t, "LatentComposite", nodes.Inputs{"samples_to": to, "samples_from": from, "x": int64(64), "y": int64(0), "feather": int64(0)}))
	if diffMax(v, make([]float32, 16)) != 0 {
		t.Fatal("a paste outside changed the latent")
	}
	bad := latentOf(t, idx, 2, 2, 4, 4)
	if _, err := run(t, Options{}, nil, "LatentComposite", nodes.Inputs{"samples_to": to, "samples_from": bad, "x": int64(0), "y": int64(0), "feather": int64(0)}); err == nil {
		t.Fatal("channel mismatch: no error")
	}
}
