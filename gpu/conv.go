package gpu

import "fmt"

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
	if err := rt.run(OpConv2D, &Call{In: []*Tensor{xc, wc, bias}, Out: out, Params: p}); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// cpuConv2D is an implicit GEMM: out[n] (Cout × OH·OW) = W (Cout × Cin·kh·kw) · col. A 1×1
// stride-1 unpadded conv is one batched GEMM on the input; other stride-1 convs use
// convShifted (no col at all); the rest build col one tile of output pixels at a time in
// pooled scratch (≤ 16 MB per worker), each tile one GEMM written straight into the output.
func cpuConv2D(c *CPU, call *Call) error {
	x, w, bias, out := call.In[0], call.In[1], call.In[2], call.Out
	p := call.Params.(ConvParams)
	n, cin, h, wd := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, kh, kw := w.shape[0], w.shape[2], w.shape[3]
	oh, ow := out.shape[2], out.shape[3]
	ohw := oh * ow
	o := out.f32c()
	if len(o) == 0 {
		return nil
	}
	k := cin * kh * kw
	var wf []float32
	if w.dtype == F32 {
		wf = w.f32c()
	} else {
		wf = c.scratch.get(cout * k)
		defer c.scratch.put(wf)
		// decode per output channel on all threads (a 320×320×3×3 F16 weight is 0.9 M values)
		wb, rb := w.bytes(), w.dtype.BlockBytes()*k
		derrs := make([]error, c.threads)
		c.parallelForW(cout, 8, func(wi, lo, hi int) {
			derrs[wi] = DecodeFloat32(w.dtype, wf[lo*k:hi*k], wb[lo*rb:hi*rb])
		})
		for _, err := range derrs {
			if err != nil {
				return err
			}
		}
	}
	acc := false
	if bias != nil {
		bv := bias.f32c()
		c.parallelFor(n*cout, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				v := bv[i%cout]
				d := o[i*ohw : (i+1)*ohw]
				for j := range d {
					d[j] = v
				}
			}
		})
		acc = true
	}
	xs := x.f32c()
	if k == 0 {
		if !acc {
			clear(o)
		}
		return nil
	}
	if kh == 1 && kw == 1 && p.Stride == 1 && p.Top == 0 && p.Bottom == 0 && p.Left == 0 && p.Right == 0 {
		return c.mm.sgemm(false, n, 0, cin*h*wd, cout*ohw, false, false, cout, ohw, cin,
			wf, cin, xs, h*wd, o, ohw, acc)
	}
	if p.Stride == 1 && cin >= c.shiftedMinCin {
		return c.convShifted(xs, wf, o, n, cin, h, wd, cout, kh, kw, p, oh, ow, acc)
	}
	// Tile width: 512 output pixels (a multiple of every GEMM register tile), so that
	// packing the weight once per GEMM costs ~1/512 of its arithmetic; fewer when the
	// col tile would pass convTileFloats.
	tile := max(16, min(ohw, 512, c.tileFloats/k/16*16))
	perImage := (ohw + tile - 1) / tile
	tiles := n * perImage
	serial := tiles >= c.threads
	errs := make([]error, c.threads)
	run := func(wi, lo, hi int) {
		col := c.scratch.get(k * tile)
		defer c.scratch.put(col)
		for t := lo; t < hi; t++ {
			img, p0 := t/perImage, (t%perImage)*tile
			cols := min(tile, ohw-p0)
			im2col(col, cols, xs[img*cin*h*wd:], cin, h, wd, kh, kw, p.Stride, p.Top, p.Left, ow, p0)
			err := c.mm.sgemm(serial, 1, 0, 0, 0, false, false, cout, cols, k,
				wf, k, col, cols, o[img*cout*ohw+p0:], ohw, acc)
			if err != nil && errs[wi] == nil {
				errs[wi] = err
			}
		}
	}
	if serial {
		// enough tiles for every thread: one single-threaded GEMM per tile per worker
		c.parallelForW(tiles, 1, run)
	} else {
		// few tiles: each GEMM uses all threads
		run(0, 0, tiles)
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// convShifted computes a stride-1 conv without im2col. The input is zero-padded into
// planes of width Wp = W+left+right; on that grid, tap (ky, kx) of every output pixel reads
// the padded plane shifted by ky·Wp + kx, which is a plain strided matrix (Cin rows of
// R·Wp values, row stride = the plane size). So the conv is kh·kw accumulating GEMMs
// grid (Cout × R·Wp) += W_tap (Cout × Cin) · X_shift, and the Wp−OW extra columns of each
// grid row (taps that wrapped into the next row) are dropped when the grid is copied into
// the output. The GEMM's packing is the only copy of the input per tap. Output rows go
// in bands of R rows so the padded band and the grid stay within CPU.tileFloats each
// (a 512² VAE layer would otherwise need two image-sized scratch buffers).
func (c *CPU) convShifted(xs, wf, o []float32, n, cin, h, wd, cout, kh, kw int, p ConvParams, oh, ow int, acc bool) error {
	wp := wd + p.Left + p.Right
	taps := kh * kw
	wt := c.scratch.get(taps * cout * cin)
	defer c.scratch.put(wt)
	for co := 0; co < cout; co++ {
		for ci := 0; ci < cin; ci++ {
			src := wf[(co*cin+ci)*taps:][:taps]
			for t, v := range src {
				wt[(t*cout+co)*cin+ci] = v
			}
		}
	}
	rows := max(1, min(oh, c.tileFloats/(n*max(cin, cout)*wp)-(kh-1)))
	bandH := rows + kh - 1 // padded input rows one band reads
	plane := bandH * wp
	slack := kw - 1 // the last tap's last grid row reads this far past the last plane
	xp := c.scratch.get(n*cin*plane + slack)
	defer c.scratch.put(xp)
	grid := c.scratch.get(n * cout * rows * wp)
	defer c.scratch.put(grid)
	for y0 := 0; y0 < oh; y0 += rows {
		r := min(rows, oh-y0)
		gridN := r * wp
		// padded rows y0 … y0+r+kh−2 of every (image, channel), in planes of bandH rows
		clear(xp)
		c.parallelFor(n*cin, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				for py := 0; py < r+kh-1; py++ {
					y := y0 + py - p.Top
					if y < 0 || y >= h {
						continue
					}
					copy(xp[i*plane+py*wp+p.Left:][:wd], xs[(i*h+y)*wd:][:wd])
				}
			}
		})
		for t := 0; t < taps; t++ {
			ky, kx := t/kw, t%kw
			err := c.mm.sgemm(false, n, 0, cin*plane, cout*gridN, false, false, cout, gridN, cin,
				wt[t*cout*cin:], cin, xp[ky*wp+kx:], plane, grid, gridN, t > 0)
			if err != nil {
				return err
			}
		}
		c.parallelFor(n*cout, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				for y := 0; y < r; y++ {
					src := grid[i*gridN+y*wp:][:ow]
					dst := o[(i*oh+y0+y)*ow:][:ow]
					if acc {
						for j, v := range src {
							dst[j] += v
						}
					} else {
						copy(dst, src)
					}
				}
			}
		})
	}
	return nil
}

// im2col fills col (k × cols, row stride cols) with the input patches for output pixels
// [p0, p0+cols) of one image (row-major over OH×OW); out-of-bounds taps are 0.
func im2col(col []float32, cols int, x []float32, cin, h, w, kh, kw, stride, padT, padL, ow, p0 int) {
	oy0, ox0 := p0/ow, p0%ow
	for ci := 0; ci < cin; ci++ {
		plane := x[ci*h*w : (ci+1)*h*w]
		for ky := 0; ky < kh; ky++ {
			for kx := 0; kx < kw; kx++ {
				row := col[((ci*kh+ky)*kw+kx)*cols:][:cols]
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
						if stride == 1 && ix >= 0 && ix+run <= w {
							copy(row[j:j+run], src[ix:ix+run])
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

// convShiftedMinCin is the input channel count from which a stride-1 conv uses
// convShifted: each of its kh·kw GEMMs has K = Cin, and with fewer channels the output
// grid's repeated read-modify-write costs more than building im2col tiles (measured: a
// 3×3 conv at 256×256×128 ran 112 GFLOP/cpu-s shifted vs 141–145 with im2col; at 320 and
// 640 channels the two were equal within noise).
const convShiftedMinCin = 256

// convTileFloats bounds a conv's scratch: one worker's im2col tile, or one band of the
// padded input and of the output grid (16 MB each). CPU.tileFloats holds it (tests shrink it).
const convTileFloats = 1 << 22
