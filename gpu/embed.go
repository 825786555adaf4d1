package gpu

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/internal/sleef"
)

// RoPE rotates x (B, H, L, D) by Flux's rotary table pe, of shape (B', 1, L, D/2, 2, 2) or
// (B', L, D/2, 2, 2) with B' ∈ {1, B}: for each pair (x0, x1) = x[…, 2d:2d+2],
// out_i = pe[d,i,0]·x0 + pe[d,i,1]·x1 (comfy/ldm/flux/math.py, apply_rope).
func RoPE(rt *Runtime, x, pe *Tensor) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) != 4 || x.shape[3]%2 != 0 {
		return nil, fmt.Errorf("gpu: rope input %s must be F32 (B, H, L, D) with even D", x)
	}
	b, l, d := x.shape[0], x.shape[2], x.shape[3]
	ps := pe.shape
	if len(ps) == 6 {
		if ps[1] != 1 {
			return nil, fmt.Errorf("gpu: rope table %v: dim 1 must be 1", ps)
		}
		ps = append(ps[:1:1], ps[2:]...)
	}
	if pe.dtype != F32 || len(ps) != 5 || (ps[0] != 1 && ps[0] != b) || ps[1] != l || ps[2] != d/2 || ps[3] != 2 || ps[4] != 2 {
		return nil, fmt.Errorf("gpu: rope table %s does not fit x %v (want (%d|1, [1,] %d, %d, 2, 2))", pe, x.shape, b, l, d/2)
	}
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	pc, err := Contiguous(rt, pe)
	if err != nil {
		return nil, err
	}
	defer pc.Release()
	out, err := rt.Empty(F32, x.shape...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(OpRoPE, rt.call(out, xc, pc)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

func cpuRoPE(c *CPU, call *Call) error {
	x, pe, out := call.In[0], call.In[1], call.Out
	b, h, l, d := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	xs, ps, o := x.f32c(), pe.f32c(), out.f32c()
	if len(o) == 0 {
		return nil
	}
	r := ropeLoop{xs: xs, ps: ps, o: o, h: h, l: l, d: d, pb: pe.shape[0]}
	return forEach(c, b*h*l, max(1, 4096/max(d, 1)), r, func(r *ropeLoop, _, lo, hi int) error {
		h, l, d := r.h, r.l, r.d
		for i := lo; i < hi; i++ {
			bi, li := i/(h*l), i%l
			tab := r.ps[((bi%r.pb)*l+li)*d*2:][:d*2] // (D/2, 2, 2)
			src, dst := r.xs[i*d:(i+1)*d], r.o[i*d:(i+1)*d]
			for k := 0; k < d/2; k++ {
				x0, x1 := src[2*k], src[2*k+1]
				t := tab[4*k : 4*k+4]
				dst[2*k] = float32(t[0]*x0) + float32(t[1]*x1)
				dst[2*k+1] = float32(t[2]*x0) + float32(t[3]*x1)
			}
		}
		return nil
	})
}

// RoPEFreqs builds Flux's rotary table from position ids (B, L, len(axesDim)) F32:
// for each axis a with dimension axesDim[a] (even), angles pos·θ^(−2j/dim) in float64,
// laid out as [[cos, −sin], [sin, cos]] and concatenated over the axes, giving
// (B, 1, L, Σdim/2, 2, 2) in F32 (comfy/ldm/flux/math.py rope, layers.py EmbedND).
// It runs on the host: the table is small and built once per sampling run.
func RoPEFreqs(rt *Runtime, ids *Tensor, axesDim []int, theta float64) (*Tensor, error) {
	if ids.dtype != F32 || len(ids.shape) != 3 || ids.shape[2] != len(axesDim) {
		return nil, fmt.Errorf("gpu: rope ids %s must be F32 (B, L, %d)", ids, len(axesDim))
	}
	half := 0
	for _, ad := range axesDim {
		if ad <= 0 || ad%2 != 0 {
			return nil, fmt.Errorf("gpu: rope axis dims %v must be positive and even", axesDim)
		}
		half += ad / 2
	}
	pos, err := ids.Float32()
	if err != nil {
		return nil, err
	}
	b, l, na := ids.shape[0], ids.shape[1], len(axesDim)
	tab := make([]float32, b*l*half*4)
	for bl := 0; bl < b*l; bl++ {
		k := 0
		for a, ad := range axesDim {
			p := float64(pos[bl*na+a])
			n := ad / 2
			for j := 0; j < n; j++ {
				// torch.linspace(0, (dim-2)/dim, dim//2) in float64
				var scale float64
				if n > 1 {
					scale = float64(j) * ((float64(ad-2) / float64(ad)) / float64(n-1))
				}
				ang := p * (1 / math.Pow(theta, scale))
				cs, sn := math.Cos(ang), math.Sin(ang)
				t := tab[(bl*half+k)*4:]
				t[0], t[1], t[2], t[3] = float32(cs), float32(-sn), float32(sn), float32(cs)
				k++
			}
		}
	}
	return rt.FromFloat32(tab, b, 1, l, half, 2, 2)
}

// TimestepEmbedding returns the sinusoidal embedding (N, Dim) of timesteps t (N):
// [cos(args), sin(args)] with args = (Scale·t)·exp(−ln(MaxPeriod)·j/half), j < Dim/2, and
// a zero column when Dim is odd — ComfyUI's timestep_embedding
// (ldm/modules/diffusionmodules/util.py; Flux's ldm/flux/layers.py with Scale = 1000).
// MaxPeriod 0 means 10000, Scale 0 means 1. The float32 roundings follow PyTorch's.
func TimestepEmbedding(rt *Runtime, t *Tensor, p TimestepParams) (*Tensor, error) {
	if t.dtype != F32 || len(t.shape) != 1 {
		return nil, fmt.Errorf("gpu: timestep_embedding input %s must be F32 (N)", t)
	}
	if p.Dim < 0 {
		return nil, fmt.Errorf("gpu: timestep_embedding dim %d", p.Dim)
	}
	if p.MaxPeriod == 0 {
		p.MaxPeriod = 10000
	}
	if p.Scale == 0 {
		p.Scale = 1
	}
	tc, err := Contiguous(rt, t)
	if err != nil {
		return nil, err
	}
	defer tc.Release()
	out, err := rt.Empty(F32, t.shape[0], p.Dim)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, tc)
	c.params.timestep = p
	c.Params = &c.params.timestep
	if err := rt.exec(OpTimestepEmbedding, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

func cpuTimestepEmbedding(c *CPU, call *Call) error {
	p := *call.Params.(*TimestepParams)
	ts, o := call.In[0].f32c(), call.Out.f32c()
	half := p.Dim / 2
	freqs := c.scratch.get(half)
	defer c.scratch.put(freqs)
	nl := float32(-math.Log(p.MaxPeriod))
	for j := range freqs {
		// torch.exp on float32 is SLEEF's expf (one ulp); SDXL's size embedding
		// multiplies these by pixel sizes up to 4096, so the ulp matters.
		freqs[j] = sleef.Expf(float32(nl*float32(j)) / float32(half))
	}
	for i, t := range ts {
		tv := t
		if p.Scale != 1 {
			tv = float32(p.Scale) * t
		}
		row := o[i*p.Dim : (i+1)*p.Dim]
		for j, f := range freqs {
			a := float64(tv * f)
			row[j] = float32(math.Cos(a))
			row[half+j] = float32(math.Sin(a))
		}
		if p.Dim%2 == 1 {
			row[p.Dim-1] = 0
		}
	}
	return nil
}

// Patchify turns Flux latents x (B, C, H, W) into tokens (B, (H/P)·(W/P), C·P·P),
// "b c (h ph) (w pw) -> b (h w) (c ph pw)" (comfy/ldm/flux/model.py). H and W must be
// multiples of P (ComfyUI pads first, with pad_to_patch_size).
func Patchify(rt *Runtime, x *Tensor, patch int) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) != 4 || patch < 1 || x.shape[2]%patch != 0 || x.shape[3]%patch != 0 {
		return nil, fmt.Errorf("gpu: patchify %s by %d: need F32 (B, C, H, W) with H, W multiples of the patch", x, patch)
	}
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	b, ch, h, w := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	out, err := rt.Empty(F32, b, (h/patch)*(w/patch), ch*patch*patch)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, xc)
	c.params.patch = PatchParams{P: patch, H: h, W: w}
	c.Params = &c.params.patch
	if err := rt.exec(OpPatchify, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// Unpatchify is the inverse of Patchify: tokens (B, (H/P)·(W/P), C·P·P) back to
// (B, C, H, W).
func Unpatchify(rt *Runtime, x *Tensor, patch, h, w int) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) != 3 || patch < 1 || h%patch != 0 || w%patch != 0 || h < 0 || w < 0 ||
		x.shape[1] != (h/patch)*(w/patch) || x.shape[2]%(patch*patch) != 0 {
		return nil, fmt.Errorf("gpu: unpatchify %s to %dx%d by %d: shapes do not fit", x, h, w, patch)
	}
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	out, err := rt.Empty(F32, x.shape[0], x.shape[2]/(patch*patch), h, w)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, xc)
	c.params.patch = PatchParams{P: patch, H: h, W: w}
	c.Params = &c.params.patch
	if err := rt.exec(OpUnpatchify, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// patchLoop pairs every element of an image batch (b, ch, h, w) with its place in the
// patch tokens of size p: toTokens copies image → tokens (patchify), else back.
// ropeLoop is cpuRoPE's loop over the b·h·l rows of d values of xs, rotated by the
// tables ps (pb batches of them).
type ropeLoop struct {
	xs, ps, o   []float32
	h, l, d, pb int
}

type patchLoop struct {
	img, tok    []float32
	ch, h, w, p int
	toTokens    bool
}

func patchWalk(c *CPU, l patchLoop, b int) error {
	return forEach(c, b*l.ch, 1, l, func(l *patchLoop, _, lo, hi int) error {
		ch, h, w, p := l.ch, l.h, l.w, l.p
		hp, wp := h/p, w/p
		for bc := lo; bc < hi; bc++ {
			bi, ci := bc/ch, bc%ch
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					img := (bc*h+y)*w + x
					tok := ((bi*hp+y/p)*wp+x/p)*ch*p*p + (ci*p+y%p)*p + x%p
					if l.toTokens {
						l.tok[tok] = l.img[img]
					} else {
						l.img[img] = l.tok[tok]
					}
				}
			}
		}
		return nil
	})
}

func cpuPatchify(c *CPU, call *Call) error {
	x, pp := call.In[0], *call.Params.(*PatchParams)
	return patchWalk(c, patchLoop{img: x.f32c(), tok: call.Out.f32c(), ch: x.shape[1], h: pp.H, w: pp.W, p: pp.P, toTokens: true}, x.shape[0])
}

func cpuUnpatchify(c *CPU, call *Call) error {
	out, pp := call.Out, *call.Params.(*PatchParams)
	return patchWalk(c, patchLoop{img: out.f32c(), tok: call.In[0].f32c(), ch: out.shape[1], h: pp.H, w: pp.W, p: pp.P}, out.shape[0])
}

// Upscale is comfy.utils.common_upscale on x (N, C, H, W): see gpu/resample.Upscale.
func Upscale(rt *Runtime, x *Tensor, p UpscaleParams) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) != 4 {
		return nil, fmt.Errorf("gpu: upscale input %s must be F32 (N, C, H, W)", x)
	}
	if p.Width <= 0 || p.Height <= 0 {
		return nil, fmt.Errorf("gpu: upscale to %dx%d", p.Width, p.Height)
	}
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	out, err := rt.Empty(F32, x.shape[0], x.shape[1], p.Height, p.Width)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, xc)
	c.params.upscale = p
	c.Params = &c.params.upscale
	if err := rt.exec(OpUpscale, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

func cpuUpscale(c *CPU, call *Call) error {
	x, p := call.In[0], *call.Params.(*UpscaleParams)
	s := x.shape
	dst, src := call.Out.f32c(), x.f32c()
	pl := c.planes.get()
	defer c.planes.put(pl)
	defer pl.Release()
	ok, err := pl.Prepare(dst, src, s[0], s[1], s[2], s[3], p.Width, p.Height, p.Method, p.Crop)
	if err == nil && !ok {
		err = resample.UpscaleInto(dst, src, s[0], s[1], s[2], s[3], p.Width, p.Height, p.Method, p.Crop)
	}
	if err != nil {
		return fmt.Errorf("gpu: %w", err)
	}
	if !ok {
		return nil
	}
	return forEach(c, pl.Count(), 1, pl, func(pl **resample.Planes, _, lo, hi int) error {
		(*pl).Run(lo, hi)
		return nil
	})
}
