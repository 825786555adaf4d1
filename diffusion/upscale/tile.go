package upscale

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/tiling"
	"github.com/forgeflow/forgeflow/gpu"
)

// Image is a batch of images, NCHW float32 with values in 0..1.
type Image struct {
	N, C, H, W int
	Pix        []float32
}

// TileOptions configure Upscale. The zero value is ComfyUI's ImageUpscaleWithModel:
// 512-pixel tiles overlapping by 32, no memory bound.
type TileOptions struct {
	// Tile is the largest tile edge tried first (512 when 0); Overlap the overlap (32
	// when 0; use a negative value for none).
	Tile, Overlap int
	// Budget bounds the activation memory of one tile (Model.PeakBytes): the tile edge
	// is halved until a tile fits, as ComfyUI halves it on an out-of-memory error, down
	// to 128; 0 means no bound.
	Budget int64
	// Progress, when set, is called after each tile with the tiles done and the total.
	Progress func(done, total int)
}

// minTile is the smallest tile ComfyUI tries before giving up.
const minTile = 128

// outChannels is what comfy.utils.tiled_scale writes: three channels (a one-channel
// output broadcasts into them).
const outChannels = 3

// TileSize returns the tile edge Upscale uses for an h×w image: o.Tile halved until a
// tile's activations fit o.Budget, or an error when even a 128-pixel tile does not.
func (m *Model) TileSize(h, w int, o TileOptions) (int, error) {
	tile := o.Tile
	if tile == 0 {
		tile = 512
	}
	for {
		need := m.PeakBytes(min(h, tile), min(w, tile))
		if o.Budget <= 0 || need <= o.Budget {
			return tile, nil
		}
		if tile/2 < minTile {
			return 0, fmt.Errorf("upscale: a %d-pixel tile of %s needs %d MiB, more than the %d MiB allowed", min(tile, max(h, w)), m, need>>20, o.Budget>>20)
		}
		tile /= 2
	}
}

// Upscale is ImageUpscaleWithModel (comfy_extras/nodes_upscale_model.py): each image
// of the batch is cut into tiles (comfy.utils.tiled_scale with feathered blending),
// each tile is run as spandrel's ImageModelDescriptor.__call__ runs the model (padded
// at the bottom and right to the size requirements by reflection, then replication;
// output clamped to 0..1 and cropped), and the result is clamped to 0..1. The result
// has three channels.
func (m *Model) Upscale(ctx context.Context, rt *gpu.Runtime, in Image, o TileOptions) (Image, error) {
	if in.C != m.InChannels {
		return Image{}, fmt.Errorf("upscale: %s takes images of %d channels, this one has %d", m, m.InChannels, in.C)
	}
	if m.OutChannels != 1 && m.OutChannels != outChannels {
		return Image{}, fmt.Errorf("upscale: %s gives %d channels; ImageUpscaleWithModel writes %d", m, m.OutChannels, outChannels)
	}
	if in.N < 0 || in.H <= 0 || in.W <= 0 || len(in.Pix) != in.N*in.C*in.H*in.W {
		return Image{}, fmt.Errorf("upscale: image %dx%dx%d×%d with %d values", in.N, in.C, in.H, in.W, len(in.Pix))
	}
	tile, err := m.TileSize(in.H, in.W, o)
	if err != nil {
		return Image{}, err
	}
	overlap := o.Overlap
	if overlap == 0 {
		overlap = 32
	}
	overlap = max(overlap, 0)
	total := in.N * tiling.Steps(in.W, in.H, tile, tile, overlap)
	done := 0
	run := func(px []float32, h, w int) ([]float32, int, int, error) {
		if err := ctx.Err(); err != nil {
			return nil, 0, 0, err
		}
		out, err := m.call(rt, px, h, w)
		if err != nil {
			return nil, 0, 0, err
		}
		done++
		if o.Progress != nil {
			o.Progress(done, total)
		}
		return out, h * m.Scale, w * m.Scale, nil
	}
	oh, ow := in.H*m.Scale, in.W*m.Scale
	res := Image{N: in.N, C: outChannels, H: oh, W: ow, Pix: make([]float32, 0, in.N*outChannels*oh*ow)}
	per := in.C * in.H * in.W
	for b := 0; b < in.N; b++ {
		out, _, _, err := tiling.Scale(ctx, in.Pix[b*per:(b+1)*per], in.C, in.H, in.W, tile, tile, overlap, float64(m.Scale), outChannels, run)
		if err != nil {
			return Image{}, err
		}
		for i, v := range out {
			out[i] = clamp01(v)
		}
		res.Pix = append(res.Pix, out...)
	}
	return res, nil
}

// call runs the model on one tile (C, h, w) as spandrel's descriptor does and returns
// (3, h·scale, w·scale).
func (m *Model) call(rt *gpu.Runtime, px []float32, h, w int) ([]float32, error) {
	ph, pw := m.Size.padding(h, w)
	padded := padBottomRight(px, m.InChannels, h, w, ph, pw)
	x, err := rt.FromFloat32(padded, 1, m.InChannels, h+ph, w+pw)
	if err != nil {
		return nil, err
	}
	y, err := m.net.forward(rt, x)
	x.Release()
	if err != nil {
		return nil, fmt.Errorf("upscale: %s: %w", m, err)
	}
	vals, err := y.Float32()
	y.Release()
	if err != nil {
		return nil, err
	}
	s := m.Scale
	fh, fw := (h+ph)*s, (w+pw)*s
	if len(vals) != m.OutChannels*fh*fw {
		return nil, fmt.Errorf("upscale: %s gave %d values for a %dx%d tile", m, len(vals), w+pw, h+ph)
	}
	oh, ow := h*s, w*s
	out := make([]float32, outChannels*oh*ow)
	for c := 0; c < outChannels; c++ {
		src := c
		if m.OutChannels == 1 {
			src = 0
		}
		for y := 0; y < oh; y++ {
			row := vals[(src*fh+y)*fw : (src*fh+y)*fw+ow]
			dst := out[(c*oh+y)*ow : (c*oh+y+1)*ow]
			for x, v := range row {
				dst[x] = clamp01(v)
			}
		}
	}
	return out, nil
}

// padBottomRight pads a (C, h, w) image by ph rows and pw columns at the bottom and
// right as spandrel's pad_tensor does: reflection (at most size − 1), then replication
// of the last row or column for the rest.
func padBottomRight(px []float32, c, h, w, ph, pw int) []float32 {
	if ph == 0 && pw == 0 {
		return px
	}
	nh, nw := h+ph, w+pw
	out := make([]float32, c*nh*nw)
	src := func(i, n int) int {
		if i < n {
			return i
		}
		r := min(i-n+1, n-1) // reflected distance past the edge, then held
		return n - 1 - r
	}
	for ch := 0; ch < c; ch++ {
		for y := 0; y < nh; y++ {
			sy := src(y, h)
			row := px[(ch*h+sy)*w : (ch*h+sy+1)*w]
			dst := out[(ch*nh+y)*nw : (ch*nh+y+1)*nw]
			copy(dst, row)
			for x := w; x < nw; x++ {
				dst[x] = row[src(x, w)]
			}
		}
	}
	return out
}

// clamp01 is torch.clamp(v, 0, 1); NaN stays NaN as in torch.
func clamp01(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}
