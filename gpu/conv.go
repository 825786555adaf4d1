package gpu

import (
	"context"
	"fmt"
	"runtime/pprof"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// Conv2D returns the 2-d cross-correlation of x (N, Cin, H, W, F32) with w (Cout, Cin,
// kh, kw) in its stored float dtype, plus bias (Cout, F32, may be nil), with equal stride
// and zero padding on both axes: torch.nn.functional.conv2d with groups=1, dilation=1.
func Conv2D(rt *Runtime, x, w, bias *Tensor, stride, padding int) (*Tensor, error) {
	return Conv2DPadded(rt, x, w, bias, ConvParams{Stride: stride, Top: padding, Bottom: padding, Left: padding, Right: padding})
}

// Conv2DPadded is Conv2D with its own zero padding per side, e.g. the VAE's downsampling
// F.pad(x, (0, 1, 0, 1)) followed by a stride-2 unpadded conv is
// ConvParams{Stride: 2, Bottom: 1, Right: 1}.
func Conv2DPadded(rt *Runtime, x, w, bias *Tensor, p ConvParams) (*Tensor, error) {
	stride := p.Stride
	if x.dtype != F32 || len(x.shape) != 4 {
		return nil, fmt.Errorf("gpu: conv2d input %s must be F32 (N, C, H, W)", x)
	}
	if len(w.shape) != 4 || !w.dtype.IsFloat() {
		return nil, fmt.Errorf("gpu: conv2d weight %s must be (Cout, Cin, kh, kw) in a float dtype", w)
	}
	if stride < 1 || p.Top < 0 || p.Bottom < 0 || p.Left < 0 || p.Right < 0 {
		return nil, fmt.Errorf("gpu: conv2d stride %d padding %+v", stride, p)
	}
	n, cin, h, wd := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, kh, kw := w.shape[0], w.shape[2], w.shape[3]
	if w.shape[1] != cin {
		return nil, fmt.Errorf("gpu: conv2d input %v has %d channels, weight %v expects %d", x.shape, cin, w.shape, w.shape[1])
	}
	if bias != nil && (bias.dtype != F32 || len(bias.shape) != 1 || bias.shape[0] != cout) {
		return nil, fmt.Errorf("gpu: conv2d bias %s must be F32 [%d]", bias, cout)
	}
	ph, pw := h+p.Top+p.Bottom, wd+p.Left+p.Right
	if ph < kh || pw < kw {
		return nil, fmt.Errorf("gpu: conv2d input %dx%d (padded %dx%d) smaller than kernel %dx%d", h, wd, ph, pw, kh, kw)
	}
	oh, ow := (ph-kh)/stride+1, (pw-kw)/stride+1
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	wc, err := Contiguous(rt, w)
	if err != nil {
		return nil, err
	}
	defer wc.Release()
	out, err := rt.Empty(F32, n, cout, oh, ow)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, xc, wc, bias)
	c.params.conv = p
	c.Params = &c.params.conv
	if err := rt.exec(OpConv2D, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// cpuConv2D is an implicit GEMM with the weight in its stored dtype: the output, taken
// pixel-major, is outᵀ (pixels × Cout) = A (pixels × Cin·kh·kw) · Wᵀ, which is
// gemm.LinearGather with W (Cout × Cin·kh·kw, the tensor's own layout) as the right
// operand. The GEMM converts W panel by panel while packing it, once per call and shared
// by both threads, so no F32 copy of the weight is ever made (an F16 SD1.5 UNet used to
// decode and transpose ~400 M weight values per evaluation). A is never stored either:
// column (ci, ky, kx) of A is a run of consecutive floats of a zero-padded input band
// (convBand, stride 1) or of an im2col tile (convCol). The pixel-major result is
// transposed into NCHW with the bias added (scatterT).
func cpuConv2D(c *CPU, call *Call) error {
	x, w, bias, out := call.In[0], call.In[1], call.In[2], call.Out
	p := *call.Params.(*ConvParams)
	n, cin, h, wd := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, kh, kw := w.shape[0], w.shape[2], w.shape[3]
	oh, ow := out.shape[2], out.shape[3]
	o := out.f32c()
	if len(o) == 0 {
		return nil
	}
	var bv []float32
	if bias != nil {
		bv = bias.f32c()
	}
	k := cin * kh * kw
	if k == 0 {
		f := fillLoop{o: o, bias: bv, cout: cout, plane: oh * ow}
		return forEach(c, n*cout, 1, f, func(f *fillLoop, _, lo, hi int) error {
			for i := lo; i < hi; i++ {
				v := float32(0)
				if f.bias != nil {
					v = f.bias[i%f.cout]
				}
				d := f.o[i*f.plane : (i+1)*f.plane]
				for j := range d {
					d[j] = v
				}
			}
			return nil
		})
	}
	cv := convGeom{n: n, cin: cin, h: h, w: wd, cout: cout, kh: kh, kw: kw, oh: oh, ow: ow, p: p,
		x: x.f32c(), wd: w.dtype, wb: w.bytes(), bias: bv, o: o}
	if c.wantWinograd(&cv) {
		if ww := c.winogradWeights(w, cout, cin); ww != nil {
			if c.labels {
				var err error
				pprof.Do(context.Background(), pprof.Labels("op", "conv2d-winograd"), func(context.Context) { err = c.convWinograd(&cv, ww) })
				return err
			}
			return c.convWinograd(&cv, ww)
		}
	}
	cv.pk = c.packedWeight(w, cout, k)
	off := c.ints.get(k)
	defer c.ints.put(off)
	if p.Stride == 1 && !c.preferCol(&cv) {
		return c.convBand(&cv, off)
	}
	return c.convCol(&cv, off)
}

// convGeom is one conv call's sizes and operands.
type convGeom struct {
	n, cin, h, w, cout, kh, kw, oh, ow int
	p                                  ConvParams
	x                                  []float32    // input, NCHW contiguous
	wd                                 DType        // weight dtype
	wb                                 []byte       // weight storage (Cout × Cin·kh·kw)
	pk                                 *gemm.Packed // the weight's panels, or nil
	bias                               []float32    // nil: none
	o                                  []float32    // output, NCHW contiguous
}

// Conv forms for CPU.convForm (tests force each; convAuto chooses per call).
const (
	convAuto = iota
	convFormBand
	convFormCol
	convFormWino // Winograd F(2×2, 3×3) for every stride-1 3×3 conv (winograd.go)
)

// preferCol reports whether a stride-1 conv should use an im2col tile rather than the
// padded band. The band computes the Wp−OW wrapped columns of each grid row and the
// kh−1 rows between images as waste; on a 4×4 or 8×8 latent (the UNet's deepest level)
// that is 40–80 % extra arithmetic, while there the whole im2col matrix is small.
func (c *CPU) preferCol(cv *convGeom) bool {
	switch c.convForm {
	case convFormBand:
		return false
	case convFormCol:
		return true
	}
	wp := cv.w + cv.p.Left + cv.p.Right
	grid := cv.n * (cv.oh + cv.kh - 1) * wp
	useful := cv.n * cv.oh * cv.ow
	return 4*grid > 5*useful && useful*cv.cin*cv.kh*cv.kw <= c.tileFloats
}

// convBand computes a stride-1 conv without im2col. The input is zero-padded into planes
// of width Wp = W+left+right, laid out channel-major across images: xp[ci][img][py][px].
// On that grid, tap (ky, kx) of output pixel i (= img·plane + y·Wp + x) reads
// xp[ci][i + ky·Wp + kx], so column (ci, ky, kx) of A is the run starting at
// ci·(n·plane) + ky·Wp + kx: every image and every tap in one GEMM with K = Cin·kh·kw.
// Grid rows at x ≥ OW (taps that wrapped into the next row) and between images are
// computed and dropped. Output rows go in bands of R rows so that the padded band and the
// grid stay within CPU.tileFloats each (a 512² VAE layer would otherwise need two
// image-sized scratch buffers).
func (c *CPU) convBand(cv *convGeom, off []int) error {
	n, cin, h, wd, cout, kh, kw, oh, ow, p := cv.n, cv.cin, cv.h, cv.w, cv.cout, cv.kh, cv.kw, cv.oh, cv.ow, cv.p
	wp := wd + p.Left + p.Right
	rows := max(1, min(oh, c.tileFloats/(n*max(cin, cout)*wp)-(kh-1)))
	bandH := rows + kh - 1 // padded input rows one band reads
	plane := bandH * wp
	ld := n * plane // one channel's planes, all images
	// The last column's last live row reads xp[cin·ld − 1] (Wp = OW + kw − 1), so
	// xp needs no slack past its planes.
	xp := c.scratch.get(cin * ld)
	defer c.scratch.put(xp)
	grid := c.scratch.get(ld * cout)
	defer c.scratch.put(grid)
	taps := kh * kw
	for ci := 0; ci < cin; ci++ {
		for t := 0; t < taps; t++ {
			off[ci*taps+t] = ci*ld + t/kw*wp + t%kw
		}
	}
	for y0 := 0; y0 < oh; y0 += rows {
		r := min(rows, oh-y0)
		// padded rows y0 … y0+r+kh−2 of every (channel, image)
		pl := padLoop{xp: xp, x: cv.x, n: n, cin: cin, h: h, w: wd, wp: wp, plane: plane, rows: r + kh - 1, y0: y0, top: p.Top, left: p.Left}
		if err := forEach(c, cin*n, 1, pl, func(l *padLoop, _, lo, hi int) error {
			n, wd, wp := l.n, l.w, l.wp
			for i := lo; i < hi; i++ {
				ci, img := i/n, i%n
				pl := l.xp[i*l.plane : (i+1)*l.plane]
				clear(pl)
				for py := 0; py < l.rows; py++ {
					y := l.y0 + py - l.top
					if y < 0 || y >= l.h {
						continue
					}
					copy(pl[py*wp+l.left:][:wd], l.x[((img*l.cin+ci)*l.h+y)*wd:][:wd])
				}
			}
			return nil
		}); err != nil {
			return err
		}
		m := (n-1)*plane + (r-1)*wp + ow
		if err := c.mm.gather(m, xp, off, cv.wd, cv.wb, cv.pk, cout, len(off), grid, cout); err != nil {
			return err
		}
		if err := c.scatter(scatterLoop{o: cv.o, grid: grid, bias: cv.bias, n: n, cout: cout, oh: oh, ow: ow,
			rows: r, dstY0: y0, srcImg: plane, srcRow: wp}); err != nil {
			return err
		}
	}
	return nil
}

// fillLoop is cpuConv2D's loop for an empty kernel: every output plane is its bias.
type fillLoop struct {
	o, bias     []float32
	cout, plane int
}

// padLoop is convBand's loop: rows padded input rows from y0 of every (channel, image)
// plane of x into the band xp.
type padLoop struct {
	xp, x                                        []float32
	n, cin, h, w, wp, plane, rows, y0, top, left int
}

// convCol computes a conv (any stride) from im2col tiles: col holds, for a tile of T
// output pixels counted across images, column (ci, ky, kx) of A as a contiguous run
// (row stride T), and each tile is one LinearGather. A tile is at most CPU.tileFloats
// floats (16 MB), so a large stride-2 VAE layer takes several tiles, each converting the
// weight once more (small next to the tile's arithmetic).
func (c *CPU) convCol(cv *convGeom, off []int) error {
	n, cin, cout, oh, ow := cv.n, cv.cin, cv.cout, cv.oh, cv.ow
	k := len(off)
	ohw := oh * ow
	total := n * ohw
	tile := max(16, min(total, c.tileFloats/k))
	col := c.scratch.get(k * tile)
	defer c.scratch.put(col)
	grid := c.scratch.get(tile * cout)
	defer c.scratch.put(grid)
	for i := range off {
		off[i] = i * tile
	}
	for q0 := 0; q0 < total; q0 += tile {
		cnt := min(tile, total-q0)
		// the tile's pixels, one run per image it touches
		cl := colLoop{col: col, x: cv.x, cin: cin, h: cv.h, w: cv.w, kh: cv.kh, kw: cv.kw, stride: cv.p.Stride,
			top: cv.p.Top, left: cv.p.Left, ow: ow, oh: oh, tile: tile, q0: q0, cnt: cnt}
		if err := forEach(c, cin, 1, cl, func(l *colLoop, _, lo, hi int) error {
			ohw, taps := l.oh*l.ow, l.kh*l.kw
			for q := l.q0; q < l.q0+l.cnt; {
				img, p0 := q/ohw, q%ohw
				run := min(ohw-p0, l.q0+l.cnt-q)
				x := l.x[(img*l.cin+lo)*l.h*l.w:]
				im2col(l.col[lo*taps*l.tile+q-l.q0:], l.tile, run, x, hi-lo, l.h, l.w, l.kh, l.kw, l.stride, l.top, l.left, l.ow, p0)
				q += run
			}
			return nil
		}); err != nil {
			return err
		}
		if err := c.mm.gather(cnt, col, off, cv.wd, cv.wb, cv.pk, cout, k, grid, cout); err != nil {
			return err
		}
		if err := c.scatter(scatterLoop{o: cv.o, grid: grid, bias: cv.bias, n: n, cout: cout, oh: oh, ow: ow,
			pixels: true, q0: q0, cnt: cnt}); err != nil {
			return err
		}
	}
	return nil
}

// colLoop is convCol's loop: the im2col tile of pixels [q0, q0+cnt) for a range of
// input channels.
type colLoop struct {
	col, x                                       []float32
	cin, h, w, kh, kw, stride, top, left, ow, oh int
	tile, q0, cnt                                int
}

// scatterLoop is one transposition of a pixel-major GEMM result in grid into the NCHW
// output o with the bias added (scatterT), split over output channels. Rows form (band,
// Winograd): rows output rows from dstY0 of every image, output row y of image img read
// from grid pixel img·srcImg + y·srcRow. Pixels form (im2col): pixels [q0, q0+cnt)
// counted across images, read from grid pixel q − q0.
type scatterLoop struct {
	c                           *CPU
	o, grid, bias               []float32
	n, cout, oh, ow             int
	rows, dstY0, srcImg, srcRow int
	pixels                      bool
	q0, cnt                     int
}

// scatter runs s over contiguous channel ranges, one per thread.
func (c *CPU) scatter(s scatterLoop) error {
	s.c = c
	return forEach(c, s.cout, 16, s, func(s *scatterLoop, _, co0, co1 int) error {
		cout, ohw := s.cout, s.oh*s.ow
		if s.pixels {
			for q := s.q0; q < s.q0+s.cnt; {
				img, p0 := q/ohw, q%ohw
				run := min(ohw-p0, s.q0+s.cnt-q)
				if err := s.c.scatterT(s.o[img*cout*ohw+p0:], ohw, s.grid[(q-s.q0)*cout:], run, cout, co0, co1, s.bias); err != nil {
					return err
				}
				q += run
			}
			return nil
		}
		for img := 0; img < s.n; img++ {
			for y := 0; y < s.rows; y++ {
				src := s.grid[(img*s.srcImg+y*s.srcRow)*cout:]
				dst := s.o[img*cout*ohw+(s.dstY0+y)*s.ow:]
				if err := s.c.scatterT(dst, ohw, src, s.ow, cout, co0, co1, s.bias); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// scatterT transposes cnt pixel-major rows of the GEMM result (src[j·cout + co]) into
// channel-major output rows (dst[co·ldd + j]) for channels [co0, co1) with the GEMM
// package's register-block transposer, then adds bias[co] (when bias is not nil) to
// the rows just written, while they are in cache.
func (c *CPU) scatterT(dst []float32, ldd int, src []float32, cnt, cout, co0, co1 int, bias []float32) error {
	if err := c.mm.transpose(cnt, co1-co0, src[co0:], cout, dst[co0*ldd:], ldd); err != nil {
		return err
	}
	if bias != nil {
		for co := co0; co < co1; co++ {
			v := bias[co]
			d := dst[co*ldd : co*ldd+cnt]
			for j := range d {
				d[j] += v
			}
		}
	}
	return nil
}

// im2col fills col (k × cols, row stride ld) with the input patches for output pixels
// [p0, p0+cols) of one image (row-major over OH×OW); out-of-bounds taps are 0.
func im2col(col []float32, ld, cols int, x []float32, cin, h, w, kh, kw, stride, padT, padL, ow, p0 int) {
	oy0, ox0 := p0/ow, p0%ow
	for ci := 0; ci < cin; ci++ {
		plane := x[ci*h*w : (ci+1)*h*w]
		for ky := 0; ky < kh; ky++ {
			for kx := 0; kx < kw; kx++ {
				row := col[((ci*kh+ky)*kw+kx)*ld:][:cols]
				oy, ox := oy0, ox0
				for j := 0; j < cols; {
					iy := oy*stride - padT + ky
					// run to the end of this output row (or of the tile)
					run := min(ow-ox, cols-j)
					if iy < 0 || iy >= h {
						clear(row[j : j+run])
					} else {
						src := plane[iy*w:][:w]
						ix := ox*stride - padL + kx
						if stride == 1 {
							// source columns ix … ix+run−1: zeros outside [0, w), one
							// copy for the rest (the padded taps hit both edges on
							// every row, so no per-element loop)
							lo, hi := max(0, -ix), min(run, w-ix)
							if hi <= lo {
								clear(row[j : j+run])
							} else {
								clear(row[j : j+lo])
								copy(row[j+lo:j+hi], src[ix+lo:ix+hi])
								clear(row[j+hi : j+run])
							}
						} else {
							for q := 0; q < run; q++ {
								if ix >= 0 && ix < w {
									row[j+q] = src[ix]
								} else {
									row[j+q] = 0
								}
								ix += stride
							}
						}
					}
					j += run
					ox += run
					if ox == ow {
						ox = 0
						oy++
					}
				}
			}
		}
	}
}

// convTileFloats bounds a conv's scratch: one im2col tile, or one band of the padded
// input and of the output grid (16 MB each). CPU.tileFloats holds it (tests shrink it).
const convTileFloats = 1 << 22
