package flux

import (
	"bufio"
	"math"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
)

// TestFillConcat checks concat_cond for a Flux Fill-shaped model (16 + 16 + 64 input
// channels): the image latent in the model's latent format, zeros when absent, and the
// mask folded so that channel 8·dy + dx holds pixel (8y+dy, 8x+dx).
func TestFillConcat(t *testing.T) {
	rt := newRuntime(t)
	s := TinyRandomSpec(true)
	s.InChannels = 16 + 16 + 64
	p := writeModel(t, t.TempDir(), "fill.safetensors", func(w *bufio.Writer) error { return WriteRandomSafetensors(w, s, gpu.BF16) })
	m, err := LoadFile(rt, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.ConcatChannels() != 80 {
		t.Fatalf("concat channels %d, want 80", m.ConcatChannels())
	}
	const b, h, w = 2, 3, 4
	mask := make([]float32, 1*2*8*h*8*w) // two channels, averaged
	at := func(ch, y, x int) int { return (ch*8*h+y)*8*w + x }
	mask[at(0, 8*2+5, 8*1+3)] = 1
	mask[at(1, 8*2+5, 8*1+3)] = 0.5
	mt, _ := rt.FromFloat32(mask, 1, 2, 8*h, 8*w)
	img := randTensor(t, rt, 4, 1, 16, h, w)
	c, err := m.FillConcat(rt, b, h, w, img, mt)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{b, 80, h, w}; !slices.Equal(c.Shape(), want) {
		t.Fatalf("concat %v, want %v", c.Shape(), want)
	}
	cv, iv := values(t, c), values(t, img)
	for i := 0; i < b; i++ {
		for k := range iv {
			want := (iv[k] - LatentShift) * LatentScale
			if got := cv[i*80*h*w+k]; math.Abs(float64(got-want)) > 1e-6 {
				t.Fatalf("sample %d image value %d = %v, want %v", i, k, got, want)
			}
		}
		for ch := 0; ch < 64; ch++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					want := float32(0)
					if ch == 5*8+3 && y == 2 && x == 1 {
						want = 0.75
					}
					if got := cv[((i*80+16+ch)*h+y)*w+x]; got != want {
						t.Fatalf("sample %d mask channel %d at (%d, %d) = %v, want %v", i, ch, y, x, got, want)
					}
				}
			}
		}
	}
	// no image and no mask: the zero latent in model space, an all-ones mask
	c, err = m.FillConcat(rt, 1, h, w, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cv = values(t, c)
	if got, want := cv[0], float32(-LatentShift*LatentScale); math.Abs(float64(got-want)) > 1e-7 || cv[len(cv)-1] != 1 {
		t.Errorf("defaults: image %v (want %v), mask %v (want 1)", got, want, cv[len(cv)-1])
	}
	// the model runs on noise + concat
	in := tinyInputs(t, rt, 1, h, w)
	in.Concat = c
	forward(t, rt, m, in)
	plain := tinyModel(t, rt, true)
	if c, err := plain.FillConcat(rt, 1, h, w, nil, nil); c != nil || err != nil {
		t.Errorf("a text-to-image model's concat: %v, %v", c, err)
	}
}
