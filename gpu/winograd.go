package gpu

import (
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016), for the stride-1 3×3 convolutions of large feature maps: a
// VAE decoder's and a UNet's top levels. Each 2×2 output tile is
//
//	Y = Aᵀ·[ Σ_ci (G·g·Gᵀ) ⊙ (Bᵀ·d·B) ]·A
//
// over the tile's 4×4 input window d and the 3×3 kernel g, with
//
//	Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
//	Aᵀ = [1 1 1 0; 0 1 −1 −1],
//
// so the channel sum becomes 16 independent GEMMs (tiles × Cin)·(Cin × Cout), one per
// position of the 4×4 transformed tile: 16 multiply-adds per tile and channel pair where
// the direct form needs 36 (2.25× fewer). The transformed weights U = G·g·Gᵀ are made
// once per weight, in float32, and packed as 16 GEMM weights (pack.go's cache and
// budget; 16/9 of the weight's float32 size). The input is laid out channel-last so that
// both transforms run over 16-channel vectors (winograd_amd64.s), in chunks of tiles
// sized to stay in cache with their GEMM results. The constants are 0, ±1 and ±½, so the
// rounding differs from the direct form only by the order of a few additions; the op
// suite's conv tolerances hold (TestWinogradConv).

// winoMinTiles is the least number of 2×2 output tiles for which a conv call takes the
// Winograd form, and winoMaxU the largest transformed weight (16·Cin·Cout float32) it
// takes. The form saves 40·tiles·Cin·Cout multiply-add flops and reads 64·Cin·Cout bytes
// of transformed weights (per chunk) where the direct form reads 18·Cin·Cout of F16
// weights: at ~200 GFLOP/s per core against ~10 GB/s of memory that pays from a few dozen
// tiles, but below 128 (an SD UNet's 8×8 level at batch 2) the chunks are too few to
// share the weight reads, and a 1280-channel level's matrices (105 MB per conv, over a
// gigabyte for the level) would take more memory than they save time.
const (
	winoMinTiles = 128
	winoMaxU     = 64 << 20
)

// winoWeights are a 3×3 weight's 16 transformed matrices U_ij (Cout × Cin), packed.
type winoWeights struct {
	u [16]*gemm.Packed
}

// wantWinograd reports whether the conv cv takes the Winograd form.
func (c *CPU) wantWinograd(cv *convGeom) bool {
	if cv.kh != 3 || cv.kw != 3 || cv.p.Stride != 1 || c.mm.err != nil || c.mm.weighted != c.mm.wide || !c.mm.wide.CanPack(gemm.F32) {
		return false
	}
	switch c.convForm {
	case convFormWino:
		return true
	case convFormBand, convFormCol:
		return false
	}
	tiles := cv.n * ((cv.oh + 1) / 2) * ((cv.ow + 1) / 2)
	return !c.noWino && tiles >= winoMinTiles && 64*cv.cin*cv.cout <= winoMaxU && cv.cin%16 == 0 && cv.cout%16 == 0
}

// winogradWeights returns w's transformed, packed matrices, made on first use and kept
// with the weight's buffer like packedWeight's panels; nil where w cannot be packed.
func (c *CPU) winogradWeights(w *Tensor, cout, cin int) *winoWeights {
	ps := c.packSetOf(w)
	if ps == nil {
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, en := range ps.entries {
		if en.wino != nil && en.off == w.offset && en.n == cout && en.k == cin*9 && en.dt == w.dtype {
			return en.wino
		}
	}
	e := c.mm.wide
	size := 16 * e.PackedBytes(gemm.F32, cout, cin)
	if !c.pack.reserve(size) {
		return nil
	}
	ww, err := transformWeights(c, w, cout, cin)
	if err != nil {
		c.pack.held.Add(-size)
		return nil
	}
	c.pack.track(w.buf, size)
	ps.entries = append(ps.entries, packEntry{off: w.offset, n: cout, k: cin * 9, dt: w.dtype, wino: ww})
	return ww
}

// transformWeights computes U = G·g·Gᵀ for every (cout, cin) of w in float64, rounds it
// to float32 and writes it straight into the panels of the 16 packed matrices, a
// 32-output sliver per work item on all threads.
func transformWeights(c *CPU, w *Tensor, cout, cin int) (*winoWeights, error) {
	e := c.mm.wide
	rowBytes, _ := w.dtype.StorageBytes(cin * 9)
	raw := w.bytes()
	ww := &winoWeights{}
	var panels [16][]float32
	var nr int
	for ij := range ww.u {
		pk, err := e.PackedF32(cout, cin, func(panel []float32, r int) { panels[ij], nr = panel, r })
		if err != nil {
			return nil, err
		}
		ww.u[ij] = pk
	}
	slivers := (cout + nr - 1) / nr
	l := winoWeightLoop{dtype: w.dtype, raw: raw, rowBytes: rowBytes, cin: cin, cout: cout, nr: nr, panels: panels}
	if err := forEach(c, slivers, 1, l, func(l *winoWeightLoop, _, lo, hi int) error {
		cin, nr := l.cin, l.nr
		g := make([]float32, cin*9)
		for s := lo; s < hi; s++ {
			for co := s * nr; co < min(l.cout, (s+1)*nr); co++ {
				if err := DecodeFloat32(l.dtype, g, l.raw[co*l.rowBytes:(co+1)*l.rowBytes]); err != nil {
					return err
				}
				base := s*cin*nr + co%nr
				for ci := 0; ci < cin; ci++ {
					k := g[ci*9 : ci*9+9]
					// t = G·g (4×3), then U = t·Gᵀ (4×4)
					var t [4][3]float64
					for col := 0; col < 3; col++ {
						g0, g1, g2 := float64(k[col]), float64(k[3+col]), float64(k[6+col])
						t[0][col] = g0
						t[1][col] = (g0 + g1 + g2) / 2
						t[2][col] = (g0 - g1 + g2) / 2
						t[3][col] = g2
					}
					at := base + ci*nr
					for i := 0; i < 4; i++ {
						t0, t1, t2 := t[i][0], t[i][1], t[i][2]
						l.panels[4*i][at] = float32(t0)
						l.panels[4*i+1][at] = float32((t0 + t1 + t2) / 2)
						l.panels[4*i+2][at] = float32((t0 - t1 + t2) / 2)
						l.panels[4*i+3][at] = float32(t2)
					}
				}
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return ww, nil
}

// winoWeightLoop is transformWeights' loop over 32-output slivers.
type winoWeightLoop struct {
	dtype                   DType
	raw                     []byte
	rowBytes, cin, cout, nr int
	panels                  [16][]float32
}

// convWinograd computes a stride-1 3×3 conv with transformed weights ww. Output tile rows
// go in bands: per band the input rows it reads are laid out channel-last and
// zero-padded (xt[img][row][col][ci], col = x + left), the band's tiles are cut into
// chunks that the workers take in turn (input transform, 16 GEMMs on one thread, output
// transform into a pixel-major grid), and the grid is transposed into NCHW with the bias.
func (c *CPU) convWinograd(cv *convGeom, ww *winoWeights) error {
	n, cin, cout, oh, ow := cv.n, cv.cin, cv.cout, cv.oh, cv.ow
	th, tw := (oh+1)/2, (ow+1)/2
	wt := 2*tw + 2 // columns of the channel-last band: every tile's window
	// tile rows per band: the band's input and output grid within tileFloats each
	bty := max(1, min(th, c.tileFloats/(2*n*wt*max(cin, cout))-1))
	rowsB := 2*bty + 2
	xt := c.scratch.get(n * rowsB * wt * cin)
	defer c.scratch.put(xt)
	grid := c.scratch.get(n * 2 * bty * 2 * tw * cout)
	defer c.scratch.put(grid)
	tc := winoChunkTiles(cin, cout, n*bty*tw, c.threads)
	ptrs := c.winoPtrs.get()
	defer c.winoPtrs.put(ptrs)
	for ty0 := 0; ty0 < th; ty0 += bty {
		nty := min(bty, th-ty0)
		c.winoLayout(cv, xt, ty0, nty, rowsB, wt)
		tiles := n * nty * tw
		l := winoLoop{c: c, cv: *cv, ww: ww, xt: xt, grid: grid, tc: tc, tiles: tiles, chunks: (tiles + tc - 1) / tc,
			nty: nty, rowsB: rowsB, wt: wt, tw: tw, gridRows: 2 * bty}
		parts := c.parts(l.chunks, 1)
		l.perWorker = 16 * tc * (cin + cout)
		l.scr = c.scratch.get(parts * l.perWorker)
		l.ptrs = ptrs
		if len(ptrs.w) < parts {
			ptrs.w = make([]winoPtrs, c.threads)
		}
		err := forEach(c, l.chunks, 1, l, func(l *winoLoop, w, lo, hi int) error {
			scr := l.scr[w*l.perWorker : (w+1)*l.perWorker]
			pt := &l.ptrs.w[w]
			for ch := lo; ch < hi; ch++ {
				t0, t1 := l.tiles*ch/l.chunks, l.tiles*(ch+1)/l.chunks
				if err := l.c.winoChunk(&l.cv, l.ww, l.xt, l.grid, scr, pt, l.tc, t0, t1, l.nty, l.rowsB, l.wt, l.tw, l.gridRows); err != nil {
					return err
				}
			}
			return nil
		})
		c.scratch.put(l.scr)
		clear(ptrs.w)
		if err != nil {
			return err
		}
		if err := c.scatter(scatterLoop{o: cv.o, grid: grid, bias: cv.bias, n: n, cout: cout, oh: oh, ow: ow,
			rows: min(2*nty, oh-2*ty0), dstY0: 2 * ty0, srcImg: 2 * bty * 2 * tw, srcRow: 2 * tw}); err != nil {
			return err
		}
	}
	return nil
}

// winoLoop is convWinograd's loop over the chunks of tiles of one band.
type winoLoop struct {
	c                                     *CPU
	cv                                    convGeom
	ww                                    *winoWeights
	xt, grid                              []float32
	tc, tiles, chunks, nty, rowsB, wt, tw int
	gridRows                              int
	scr                                   []float32 // perWorker floats of transforms for each worker
	perWorker                             int
	ptrs                                  *winoPtrSet
}

// winoPtrSet is one call's winoPtrs, one per worker.
type winoPtrSet struct{ w []winoPtrs }

// winoPtrs holds the row pointers winoChunk hands the transforms (kept with the backend:
// as arguments of a kernel chosen at run time they would be allocated on every call).
type winoPtrs struct {
	src, dst [16]*float32
	out      [4]*float32
}

// winoChunkTiles is the number of tiles one chunk covers: about cin·cout/(cin+cout), where
// the transformed inputs and GEMM results of a chunk weigh as much as the transformed
// weights it reads, at least 48 and at most 384, a multiple of 12 (the GEMM's register
// tile), and small enough that every thread gets two chunks.
func winoChunkTiles(cin, cout, tiles, threads int) int {
	tc := min(384, max(48, cin*cout/max(1, cin+cout)))
	if per := (tiles + 2*threads - 1) / (2 * threads); per < tc {
		tc = max(48, per)
	}
	return (tc + 11) / 12 * 12
}

// winoLayout fills the channel-last band xt for tile rows [ty0, ty0+nty): row r of image
// img holds input row 2·ty0 − top + r, column col input column col − left, zero outside
// the image.
func (c *CPU) winoLayout(cv *convGeom, xt []float32, ty0, nty, rowsB, wt int) {
	l := winoLayoutLoop{mm: c.mm, x: cv.x, xt: xt, n: cv.n, cin: cv.cin, h: cv.h, w: cv.w, top: cv.p.Top, left: cv.p.Left,
		ty0: ty0, nty: nty, rowsB: rowsB, wt: wt}
	_ = forEach(c, cv.n*(2*nty+2), 1, l, func(l *winoLayoutLoop, _, lo, hi int) error {
		cin, h, w, wt, nty := l.cin, l.h, l.w, l.wt, l.nty
		for i := lo; i < hi; i++ {
			img, r := i/(2*nty+2), i%(2*nty+2)
			row := l.xt[(img*l.rowsB+r)*wt*cin : (img*l.rowsB+r+1)*wt*cin]
			y := 2*l.ty0 - l.top + r
			if y < 0 || y >= h {
				clear(row)
				continue
			}
			x0, x1 := min(l.left, wt), min(wt, l.left+w)
			clear(row[:x0*cin])
			clear(row[x1*cin:])
			if x1 > x0 {
				// dst[x·cin + ci] = x[img][ci][y][x]
				_ = l.mm.transpose(cin, x1-x0, l.x[(img*cin)*h*w+y*w:], h*w, row[x0*cin:], cin)
			}
		}
		return nil
	})
}

// winoLayoutLoop is winoLayout's loop over the band's (image, input row) pairs.
type winoLayoutLoop struct {
	mm                                           *matmuler
	x, xt                                        []float32
	n, cin, h, w, top, left, ty0, nty, rowsB, wt int
}

// winoChunk computes tiles [t0, t1) of a band (tile t: image t/(nty·tw), tile row
// t/tw mod nty, tile column t mod tw) into the pixel-major grid; scr holds the 16
// transformed-input matrices (tc × cin) and the 16 GEMM results (tc × cout); the grid
// has gridRows pixel rows per image.
func (c *CPU) winoChunk(cv *convGeom, ww *winoWeights, xt, grid, scr []float32, pt *winoPtrs, tc, t0, t1, nty, rowsB, wt, tw, gridRows int) error {
	cin, cout := cv.cin, cv.cout
	v, m := scr[:16*tc*cin], scr[16*tc*cin:16*tc*(cin+cout)]
	src, dst, out := &pt.src, &pt.dst, &pt.out
	for t := t0; t < t1; t++ {
		img, ty, tx := t/(nty*tw), t/tw%nty, t%tw
		for r := 0; r < 4; r++ {
			for s := 0; s < 4; s++ {
				src[4*r+s] = &xt[((img*rowsB+2*ty+r)*wt+2*tx+s)*cin]
			}
		}
		for ij := range dst {
			dst[ij] = &v[(ij*tc+t-t0)*cin]
		}
		c.rk.winoIn(dst, src, cin)
	}
	for ij := range ww.u {
		w := gemm.Weight{DType: gemm.F32, N: cout, K: cin, Packed: ww.u[ij]}
		if err := c.mm.narrow.Linear(t1-t0, v[ij*tc*cin:], cin, w, m[ij*tc*cout:], cout, false); err != nil {
			return err
		}
	}
	gw := 2 * tw
	for t := t0; t < t1; t++ {
		img, ty, tx := t/(nty*tw), t/tw%nty, t%tw
		for ij := range src {
			src[ij] = &m[(ij*tc+t-t0)*cout]
		}
		for a := 0; a < 2; a++ {
			for b := 0; b < 2; b++ {
				out[2*a+b] = &grid[((img*gridRows+2*ty+a)*gw+2*tx+b)*cout]
			}
		}
		c.rk.winoOut(out, src, cout)
	}
	return nil
}

// winoInGo is the input transform V = Bᵀ·d·B over n channels: d[r][s] at src[4r+s],
// V[i][j] to dst[4i+j]; rows first, then columns, as winoInAVX512 adds them.
func winoInGo(dst, src *[16]*float32, n int) {
	var d [16][]float32
	var o [16][]float32
	for k := range d {
		d[k] = unsafe.Slice(src[k], n)
		o[k] = unsafe.Slice(dst[k], n)
	}
	for ch := 0; ch < n; ch++ {
		var t [16]float32
		for r := 0; r < 4; r++ {
			d0, d1, d2, d3 := d[4*r][ch], d[4*r+1][ch], d[4*r+2][ch], d[4*r+3][ch]
			t[4*r], t[4*r+1], t[4*r+2], t[4*r+3] = d0-d2, d1+d2, d2-d1, d1-d3
		}
		for s := 0; s < 4; s++ {
			t0, t1, t2, t3 := t[s], t[4+s], t[8+s], t[12+s]
			o[s][ch], o[4+s][ch], o[8+s][ch], o[12+s][ch] = t0-t2, t1+t2, t2-t1, t1-t3
		}
	}
}

// winoOutGo is the output transform Y = Aᵀ·M·A over n channels: M[i][j] at src[4i+j],
// Y[a][b] to dst[2a+b]; rows first, then columns, as winoOutAVX512 adds them.
func winoOutGo(dst *[4]*float32, src *[16]*float32, n int) {
	var m [16][]float32
	var o [4][]float32
	for k := range m {
		m[k] = unsafe.Slice(src[k], n)
	}
	for k := range o {
		o[k] = unsafe.Slice(dst[k], n)
	}
	for ch := 0; ch < n; ch++ {
		var r [4][2]float32
		for i := 0; i < 4; i++ {
			m0, m1, m2, m3 := m[4*i][ch], m[4*i+1][ch], m[4*i+2][ch], m[4*i+3][ch]
			r[i][0] = m0 + m1 + m2
			r[i][1] = m1 - m2 - m3
		}
		for b := 0; b < 2; b++ {
			o[b][ch] = r[0][b] + r[1][b] + r[2][b]
			o[2+b][ch] = r[1][b] - r[2][b] - r[3][b]
		}
	}
}
