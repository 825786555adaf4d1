package builtin

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/nodes"
)

func TestRebatchImages(t *testing.T) {
	a, b := ramp(3, 2, 2, 3), filled(2, 2, 2, 3, 0.5)
	res := mustRun(t, "RebatchImages", nodes.Inputs{"images": []any{a, b}, "batch_size": []any{int64(2), int64(7)}})
	list := res.Outputs[0].([]any)
	if len(list) != 3 {
		t.Fatalf("%d batches, want 3 (5 images by 2)", len(list))
	}
	want := [][]*Image{{a, a}, {a, b}, {b}}
	idx := [][]int{{0, 1}, {2, 0}, {1}}
	for i, v := range list {
		got := v.(*Image)
		if got.Batch != len(want[i]) {
			t.Fatalf("batch %d holds %d images", i, got.Batch)
		}
		for j, src := range want[i] {
			checkPix(t, got.Frame(j), src.Frame(idx[i][j]), 0)
		}
	}
	_, err := run(t, Options{}, nil, "RebatchImages", nodes.Inputs{"images": []any{a, filled(1, 3, 2, 3, 0)}, "batch_size": []any{int64(4)}})
	wantErr(t, err, "cannot batch")
	_, err = run(t, Options{}, nil, "RebatchImages", nodes.Inputs{"images": []any{a}, "batch_size": []any{int64(0)}})
	wantErr(t, err, "batch_size")
}

// TestLoadImageOutput loads from the output folder through the annotated names the front
// end sends, as LoadImage's lookup resolves them.
func TestLoadImageOutput(t *testing.T) {
	opts, dirs := saveOpts(t)
	m := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range m.Pix {
		m.Pix[i] = uint8(40 * (i % 4))
	}
	m.Set(0, 0, color.NRGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dirs.Output, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirs.Output, "out.png"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := run(t, opts, nil, "LoadImageOutput", nodes.Inputs{"image": "out.png [output]"})
	if err != nil {
		t.Fatal(err)
	}
	im := res.Outputs[0].(*Image)
	if im.Width != 3 || im.Height != 2 || im.Pix[0] != 1 || im.Pix[1] != 0 {
		t.Errorf("loaded [%d,%d] starting %v", im.Width, im.Height, im.Pix[:3])
	}
	_, err = run(t, opts, nil, "LoadImageOutput", nodes.Inputs{"image": "out.png"}) // no annotation: the input folder
	wantErr(t, err, "out.png")
}

// TestRebatchLatents follows LatentRebatch.execute by hand: pieces of batch_size, a
// size change closing the current piece, batch indices counted across the list or kept
// from the input, ones for missing noise masks (dropped when a piece's mask is all
// ones), a short mask repeated, and torch.cat's shape errors. ComfyUI's own
// LatentRebatch gives the same pieces on these cases (tools/refpeer/rebatch_ref.py).
func TestRebatchLatents(t *testing.T) {
	lat := func(base float32, n, c, h, w int) *sd.Latent {
		return latentOf(t, func(i int) float32 { return base + float32(i) }, n, c, h, w)
	}
	withMask := func(l *sd.Latent, v float32, n, h, w int) *sd.Latent {
		pix := make([]float32, n*h*w)
		for i := range pix {
			pix[i] = v
		}
		l.NoiseMask = tens(t, pix, n, 1, h, w)
		return l
	}
	type want struct {
		samples []float32 // the first value of each sample
		inds    []int
		mask    []float32 // the first value of each mask plane; nil: no mask
		maskHW  [2]int
	}
	check := func(t *testing.T, latents []any, size int64, wants []want) {
		t.Helper()
		res, err := run(t, Options{}, nil, "RebatchLatents", nodes.Inputs{"latents": latents, "batch_size": []any{size}})
		if err != nil {
			t.Fatal(err)
		}
		list := res.Outputs[0].([]any)
		if len(list) != len(wants) {
			t.Fatalf("%d pieces, want %d", len(list), len(wants))
		}
		for i, w := range wants {
			l := list[i].(*sd.Latent)
			v, shape, err := sd.LatentData(l)
			if err != nil {
				t.Fatal(err)
			}
			per := shape[1] * shape[2] * shape[3]
			var firsts []float32
			for b := 0; b < shape[0]; b++ {
				firsts = append(firsts, v[b*per])
			}
			if !slices.Equal(firsts, w.samples) || !slices.Equal(l.BatchIndex, w.inds) {
				t.Errorf("piece %d: samples %v, indices %v; want %v, %v", i, firsts, l.BatchIndex, w.samples, w.inds)
			}
			if (l.NoiseMask == nil) != (w.mask == nil) {
				t.Fatalf("piece %d: mask %v, want %v", i, l.NoiseMask, w.mask)
			}
			if l.NoiseMask == nil {
				continue
			}
			ms := l.NoiseMask.Shape()
			if len(ms) != 4 || ms[0] != len(w.mask) || ms[1] != 1 || ms[2] != w.maskHW[0] || ms[3] != w.maskHW[1] {
				t.Fatalf("piece %d: mask shape %v", i, ms)
			}
			m, _ := l.NoiseMask.Float32()
			for p, first := range w.mask {
				plane := m[p*ms[2]*ms[3] : (p+1)*ms[2]*ms[3]]
				for _, x := range plane {
					if x != first {
						t.Fatalf("piece %d mask plane %d holds %v, want %v", i, p, x, first)
					}
				}
			}
		}
	}
	// 3 + 2 samples by 2: [A0 A1] [A2 B0] [B1]; a sample is 4·2·2 = 16 values.
	t.Run("pieces", func(t *testing.T) {
		check(t, []any{lat(100, 3, 4, 2, 2), lat(200, 2, 4, 2, 2)}, 2, []want{
			{samples: []float32{100, 116}, inds: []int{0, 1}},
			{samples: []float32{132, 200}, inds: []int{2, 3}},
			{samples: []float32{216}, inds: []int{4}},
		})
	})
	// A size change closes the masked 2×2 piece; the 3×3 ones join, their indices count
	// on from 1, and their all-ones masks are dropped.
	t.Run("sizes and masks", func(t *testing.T) {
		c := withMask(lat(0, 1, 4, 2, 2), 0.5, 1, 16, 16)
		c.BatchIndex = []int{7}
		check(t, []any{c, lat(50, 2, 4, 3, 3), lat(500, 1, 4, 3, 3)}, 4, []want{
			{samples: []float32{0}, inds: []int{7}, mask: []float32{0.5}, maskHW: [2]int{16, 16}},
			{samples: []float32{50, 86, 500}, inds: []int{1, 2, 3}},
		})
	})
	// A masked latent joined with one without: ones fill in at 8× the latent size.
	t.Run("ones fill in", func(t *testing.T) {
		check(t, []any{withMask(lat(0, 1, 4, 2, 2), 0, 1, 16, 16), lat(9, 1, 4, 2, 2)}, 2, []want{
			{samples: []float32{0, 9}, inds: []int{0, 1}, mask: []float32{0, 1}, maskHW: [2]int{16, 16}},
		})
	})
	// A one-plane mask on three samples is repeated.
	t.Run("mask repeated", func(t *testing.T) {
		check(t, []any{withMask(lat(0, 3, 4, 2, 2), 0.25, 1, 16, 16)}, 3, []want{
			{samples: []float32{0, 16, 32}, inds: []int{0, 1, 2}, mask: []float32{0.25, 0.25, 0.25}, maskHW: [2]int{16, 16}},
		})
	})
	t.Run("errors", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "RebatchLatents", nodes.Inputs{"latents": []any{lat(0, 1, 4, 2, 2), lat(0, 1, 16, 2, 2)}, "batch_size": []any{int64(2)}})
		wantErr(t, err, "cannot batch 16-channel")
		_, err = run(t, Options{}, nil, "RebatchLatents", nodes.Inputs{"latents": []any{lat(0, 1, 4, 2, 2), withMask(lat(0, 1, 4, 2, 2), 0, 1, 8, 8)}, "batch_size": []any{int64(2)}})
		wantErr(t, err, "noise mask")
	})
}
