package sd

import "math"

// freqBlock is a rectangle of frequencies in fftshift coordinates (zero frequency at
// (H/2, W/2)): rows [y0, y1), columns [x0, x1), already clipped to the plane.
type freqBlock struct{ y0, y1, x0, x1 int }

// fourierScale is the filter of FreeU's and FreSca's Fourier_filter on planes of h×w
// values: ifftn(ifftshift(mask · fftshift(fftn(x)))).real over the last two dimensions,
// where mask is inside on blk and outside elsewhere. Since the mask is
// outside + (inside − outside)·1_blk and the transforms are linear, the result is
// outside·x + (inside − outside)·Re(P x) with P the projection onto blk's
// frequencies, computed from the DFT coefficients of those frequencies only (the
// blocks are a few frequencies wide in FreeU and typically small in FreSca). Sums run
// in float64; torch's float32 FFT differs by its own rounding (~1e-7 relative).
func fourierScale(x []float32, planes, h, w int, blk freqBlock, outside, inside float64) []float32 {
	out := make([]float32, len(x))
	ky := shiftedFreqs(h, blk.y0, blk.y1)
	kx := shiftedFreqs(w, blk.x0, blk.x1)
	diff := inside - outside
	if len(ky) == 0 || len(kx) == 0 || diff == 0 {
		for i, v := range x {
			out[i] = float32(outside * float64(v))
		}
		return out
	}
	cy, sy := twiddles(h, ky)
	cx, sx := twiddles(w, kx)
	nx := len(kx)
	// a[i][g]: row DFT at column frequency g; c[f][g]: the 2-D coefficients; b[i][g]:
	// the inverse along rows.
	are, aim := make([]float64, h*nx), make([]float64, h*nx)
	cre, cim := make([]float64, len(ky)*nx), make([]float64, len(ky)*nx)
	bre, bim := make([]float64, h*nx), make([]float64, h*nx)
	norm := 1 / float64(h*w)
	for p := 0; p < planes; p++ {
		plane := x[p*h*w : (p+1)*h*w]
		for i := 0; i < h; i++ {
			row := plane[i*w : (i+1)*w]
			for g := 0; g < nx; g++ {
				var re, im float64
				c, s := cx[g*w:(g+1)*w], sx[g*w:(g+1)*w]
				for k, v := range row {
					re += float64(v) * c[k]
					im -= float64(v) * s[k]
				}
				are[i*nx+g], aim[i*nx+g] = re, im
			}
		}
		for f := range ky {
			c, s := cy[f*h:(f+1)*h], sy[f*h:(f+1)*h]
			for g := 0; g < nx; g++ {
				var re, im float64
				for i := 0; i < h; i++ {
					// (a)·e^{−iθ}: (ar + i·ai)(cos − i·sin)
					ar, ai := are[i*nx+g], aim[i*nx+g]
					re += ar*c[i] + ai*s[i]
					im += ai*c[i] - ar*s[i]
				}
				cre[f*nx+g], cim[f*nx+g] = re, im
			}
		}
		for i := 0; i < h; i++ {
			for g := 0; g < nx; g++ {
				var re, im float64
				for f := range ky {
					// c·e^{+iθ}
					cr, ci := cre[f*nx+g], cim[f*nx+g]
					cs, sn := cy[f*h+i], sy[f*h+i]
					re += cr*cs - ci*sn
					im += ci*cs + cr*sn
				}
				bre[i*nx+g], bim[i*nx+g] = re, im
			}
		}
		dst := out[p*h*w : (p+1)*h*w]
		for i := 0; i < h; i++ {
			for k := 0; k < w; k++ {
				var re float64
				for g := 0; g < nx; g++ {
					re += bre[i*nx+g]*cx[g*w+k] - bim[i*nx+g]*sx[g*w+k]
				}
				dst[i*w+k] = float32(outside*float64(plane[i*w+k]) + diff*re*norm)
			}
		}
	}
	return out
}

// shiftedFreqs maps fftshift positions [lo, hi) of an n-point transform to frequency
// indices: position j holds frequency (j − n/2) mod n (fftshift rolls by n/2).
func shiftedFreqs(n, lo, hi int) []int {
	var out []int
	for j := max(lo, 0); j < min(hi, n); j++ {
		out = append(out, ((j-n/2)%n+n)%n)
	}
	return out
}

// twiddles returns cos and sin of 2π·f·k/n for each frequency f (rows) and k < n.
func twiddles(n int, freqs []int) (cos, sin []float64) {
	cos, sin = make([]float64, len(freqs)*n), make([]float64, len(freqs)*n)
	for r, f := range freqs {
		for k := 0; k < n; k++ {
			// (f·k) mod n keeps the angle small and exact for large n.
			a := 2 * math.Pi * float64((f*k)%n) / float64(n)
			cos[r*n+k], sin[r*n+k] = math.Cos(a), math.Sin(a)
		}
	}
	return cos, sin
}

// pySlice clips Python's slice [start:stop] on n items (a negative start counts from
// the end, as FreeU's mask[..., crow−t : crow+t] does on tiny planes).
func pySlice(start, stop, n int) (int, int) {
	if start < 0 {
		start = max(start+n, 0)
	}
	if stop < 0 {
		stop = max(stop+n, 0)
	}
	return min(start, n), min(stop, n)
}
