package flux

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// patches is the token count along one side: the latent padded to whole patches
// (ComfyUI's (n + p/2) // p, which is the same for its patch size 2).
func patches(n, p int) int { return (n + p - 1) / p }

// imageTokens patchifies x and the reference latents into one (B, L, C·p²) token
// tensor, registered with a, and returns their position ids, L rows of (index, row,
// column) — Flux._forward and process_img.
func (m *Model) imageTokens(rt *gpu.Runtime, a *arena, x *gpu.Tensor, refs []*gpu.Tensor, method string) (*gpu.Tensor, []float32, error) {
	p := m.Config.PatchSize
	b, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	tok, err := a.add(patchify(rt, x, p))
	if err != nil {
		return nil, nil, err
	}
	ids := positionIDs(h, w, p, 0, 0, 0)
	if len(refs) == 0 {
		return tok, ids, nil
	}
	sizes := make([][2]int, len(refs))
	for i, r := range refs {
		if r == nil || r.Rank() != 4 || r.Dim(1) != m.Config.InChannels || (r.Dim(0) != b && r.Dim(0) != 1) || r.Dim(2) == 0 || r.Dim(3) == 0 {
			return nil, nil, fmt.Errorf("flux: reference latent %d %v: want (%d or 1, %d, h, w)", i, shapeOf(r), b, m.Config.InChannels)
		}
		sizes[i] = [2]int{r.Dim(2), r.Dim(3)}
	}
	places, err := placeRefs(h, w, p, sizes, method)
	if err != nil {
		return nil, nil, err
	}
	parts := []*gpu.Tensor{tok}
	for i, r := range refs {
		rtok, err := a.add(patchify(rt, r, p))
		if err != nil {
			return nil, nil, err
		}
		if r.Dim(0) != b { // repeat_to_batch_size
			reps := make([]*gpu.Tensor, b)
			for j := range reps {
				reps[j] = rtok
			}
			if rtok, err = a.add(gpu.Concat(rt, 0, reps...)); err != nil {
				return nil, nil, err
			}
		}
		parts = append(parts, rtok)
		pl := places[i]
		ids = append(ids, positionIDs(sizes[i][0], sizes[i][1], p, pl.index, pl.hOff, pl.wOff)...)
	}
	all, err := a.add(gpu.Concat(rt, 1, parts...))
	if err != nil {
		return nil, nil, err
	}
	return all, ids, nil
}

// placement is where a reference latent's tokens go: their first id and the offsets
// (in latent pixels) of their rows and columns.
type placement struct{ index, hOff, wOff int }

// placeRefs places reference latents of the given (h, w) sizes next to an h×w latent
// as Flux._forward does for each ref_latents_method: "offset" (the default) puts each
// one below or beside those before it (whichever keeps the covered area squarer) with
// index 1; "index" stacks them at (0, 0) with indices 1, 2, …; "uxo" puts each past the
// image and the ones before it diagonally, with index 0.
func placeRefs(h, w, p int, sizes [][2]int, method string) ([]placement, error) {
	hLen, wLen := patches(h, p), patches(w, p)
	// rh, rw: the extent the references placed so far cover, in latent pixels
	var rh, rw, index int
	out := make([]placement, len(sizes))
	for i, sz := range sizes {
		rH, rW := sz[0], sz[1]
		var hOff, wOff int
		switch method {
		case "index":
			index++
		case "uxo":
			index = 0
			hOff, wOff = hLen*p+rh, wLen*p+rw
			rh += rH
			rw += rW
		case "", "offset":
			index = 1
			if rH+rh > rW+rw {
				wOff = rw
			} else {
				hOff = rh
			}
			rh = max(rh, rH+hOff)
			rw = max(rw, rW+wOff)
		default:
			return nil, fmt.Errorf("flux: reference latents method %q is not offset, index or uxo", method)
		}
		out[i] = placement{index, hOff, wOff}
	}
	return out, nil
}

func shapeOf(t *gpu.Tensor) []int {
	if t == nil {
		return nil
	}
	return t.Shape()
}

// positionIDs lists the (index, row, column) ids of an h×w latent's tokens in
// row-major order; the offsets are in latent pixels, rounded to patches.
func positionIDs(h, w, p, index, hOff, wOff int) []float32 {
	hl, wl := patches(h, p), patches(w, p)
	ho, wo := (hOff+p/2)/p, (wOff+p/2)/p
	ids := make([]float32, 0, hl*wl*3)
	for r := 0; r < hl; r++ {
		for c := 0; c < wl; c++ {
			ids = append(ids, float32(index), float32(r+ho), float32(c+wo))
		}
	}
	return ids
}

// patchify pads x (B, C, H, W) circularly to whole patches (common_dit.pad_to_patch_size:
// the first rows and columns repeat after the last) and cuts it into tokens.
func patchify(rt *gpu.Runtime, x *gpu.Tensor, p int) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	for dim := 2; dim <= 3; dim++ {
		n := x.Dim(dim)
		pad := patches(n, p)*p - n
		if pad == 0 {
			continue
		}
		if pad > n {
			return nil, fmt.Errorf("flux: latent %v is too small to pad circularly to %d×%d patches", x.Shape(), p, p)
		}
		head, err := a.add(gpu.Narrow(x, dim, 0, pad))
		if err != nil {
			return nil, err
		}
		if x, err = a.add(gpu.Concat(rt, dim, x, head)); err != nil {
			return nil, err
		}
	}
	return gpu.Patchify(rt, x, p)
}
