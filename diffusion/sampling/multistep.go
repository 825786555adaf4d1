package sampling

import "context"

// Heun++ and the improved PNDM samplers (from the diff-sampler collection) as ComfyUI
// 0.3.64 ships them.

// sampleHeunPP2 averages up to three derivatives per step, weighted by their sigmas.
func sampleHeunPP2(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	end := sigmas[len(sigmas)-1]
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoise(ctx, m, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		d := toD(x, den, sigmas[i])
		o.step(i, den, x)
		dt := sigmas[i+1] - sigmas[i]
		if sigmas[i+1] == end {
			x = axpy(x, d, dt)
			continue
		}
		x2 := axpy(x, d, dt)
		den2, err := denoise(ctx, m, x2, sigmas[i+1])
		if err != nil {
			return nil, err
		}
		d2 := toD(x2, den2, sigmas[i+1])
		out := make([]float32, len(x))
		if sigmas[i+2] == end {
			w2 := sigmas[i+1] / (2 * sigmas[0])
			w1 := 1 - w2
			for k := range x {
				out[k] = x[k] + (d[k]*w1+d2[k]*w2)*dt
			}
			x = out
			continue
		}
		x3 := axpy(x2, d2, sigmas[i+2]-sigmas[i+1])
		den3, err := denoise(ctx, m, x3, sigmas[i+2])
		if err != nil {
			return nil, err
		}
		d3 := toD(x3, den3, sigmas[i+2])
		w := 3 * sigmas[0]
		w2, w3 := sigmas[i+1]/w, sigmas[i+2]/w
		w1 := 1 - w2 - w3
		for k := range x {
			out[k] = x[k] + (w1*d[k]+w2*d2[k]+w3*d3[k])*dt
		}
		x = out
	}
	return x, nil
}

// ipndmHistory keeps the last max−1 derivatives, oldest first.
type ipndmHistory struct {
	max int
	buf [][]float32
}

func (h *ipndmHistory) push(d []float32) {
	if len(h.buf) == h.max-1 {
		copy(h.buf, h.buf[1:])
		h.buf[len(h.buf)-1] = d
		return
	}
	h.buf = append(h.buf, d)
}

// back returns the derivative n steps back (1 = previous step).
func (h *ipndmHistory) back(n int) []float32 { return h.buf[len(h.buf)-n] }

func sampleIPNDM(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return ipndm(ctx, m, x, sigmas, o, false)
}

func sampleIPNDMV(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return ipndm(ctx, m, x, sigmas, o, true)
}

// ipndm is improved PNDM (Adams–Bashforth on the derivative history) of order up to 4;
// variable=true uses the variable-step coefficients (ipndm_v). Upstream reports the
// initial x to the callback at every step; so does this.
func ipndm(ctx context.Context, m Model, x0 []float32, t []float32, o *Options, variable bool) ([]float32, error) {
	const maxOrder = 4
	hist := &ipndmHistory{max: maxOrder}
	x := x0
	for i := 0; i+1 < len(t); i++ {
		cur, next := t[i], t[i+1]
		den, err := denoise(ctx, m, x, cur)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x0)
		d := make([]float32, len(x))
		for k := range x {
			d[k] = (x[k] - den[k]) / cur
		}
		order := min(maxOrder, i+1)
		out := make([]float32, len(x))
		dt := next - cur
		switch {
		case next == 0:
			out = den
		case order == 1:
			for k := range x {
				out[k] = x[k] + dt*d[k]
			}
		case !variable:
			c := adamsBashforth[order]
			for k := range x {
				acc := c[0] * d[k]
				for j := 1; j < order; j++ {
					acc += c[j] * hist.back(j)[k]
				}
				out[k] = x[k] + dt*acc/c[4]
			}
		default:
			c := ipndmVCoeffs(t, i, order)
			for k := range x {
				acc := c[0] * d[k]
				for j := 1; j < order; j++ {
					acc += c[j] * hist.back(j)[k]
				}
				out[k] = x[k] + dt*acc
			}
		}
		x = out
		hist.push(d)
	}
	return x, nil
}

// adamsBashforth holds the fixed-step coefficients per order: c[0]·d_cur + c[1]·d_prev +
// ... all divided by c[4].
var adamsBashforth = [5][5]float32{
	2: {3, -1, 0, 0, 2},
	3: {23, -16, 5, 0, 12},
	4: {55, -59, 37, -9, 24},
}

// ipndmVCoeffs are ipndm_v's variable-step coefficients for the current derivative and up
// to three previous ones, from the step sizes h_n (this step) and h_{n−1..n−3}.
func ipndmVCoeffs(t []float32, i, order int) [4]float32 {
	hn := t[i+1] - t[i]
	hn1 := t[i] - t[i-1]
	var c [4]float32
	switch order {
	case 2:
		c[0] = (2 + hn/hn1) / 2
		c[1] = -(hn / hn1) / 2
	case 3:
		hn2 := t[i-1] - t[i-2]
		tmp := (1 - hn/(3*(hn+hn1))*(hn*(hn+hn1))/(hn1*(hn1+hn2))) / 2
		c[0] = (2+hn/hn1)/2 + tmp
		c[1] = -(hn/hn1)/2 - (1+hn1/hn2)*tmp
		c[2] = tmp * hn1 / hn2
	case 4:
		hn2 := t[i-1] - t[i-2]
		hn3 := t[i-2] - t[i-3]
		t1 := (1 - hn/(3*(hn+hn1))*(hn*(hn+hn1))/(hn1*(hn1+hn2))) / 2
		t2 := ((1-hn/(3*(hn+hn1)))/2 + (1-hn/(2*(hn+hn1)))*hn/(6*(hn+hn1+hn2))) *
			(hn * (hn + hn1) * (hn + hn1 + hn2)) / (hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3))
		q := hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3))
		c[0] = (2+hn/hn1)/2 + t1 + t2
		c[1] = -(hn/hn1)/2 - (1+hn1/hn2)*t1 - (1+hn1/hn2+q)*t2
		c[2] = t1*hn1/hn2 + (hn1/hn2+q*(1+hn2/hn3))*t2
		c[3] = -t2 * q * hn1 / hn2
	}
	return c
}
