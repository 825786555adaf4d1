package sampling

import (
	"fmt"
	"math"
	"sort"
	"strconv"
)

// The schedules of ComfyUI's custom-sampling scheduler nodes that the KSampler combo
// does not offer: closed forms of k-diffusion (polyexponential, VP) and the published
// step tables of Align Your Steps, GITS and OptimalSteps, log-linearly interpolated to
// other step counts.

// PolyexponentialSigmas is k-diffusion's get_sigmas_polyexponential (ComfyUI's
// PolyexponentialScheduler): a float32 ramp 1 … 0 raised to rho places n sigmas
// between sigmaMax and sigmaMin in log space, then 0.
func PolyexponentialSigmas(n int, sigmaMin, sigmaMax, rho float64) []float32 {
	ramp := linspace32(1, 0, n)
	diff := float32(math.Log(sigmaMax) - math.Log(sigmaMin))
	lmin := float32(math.Log(sigmaMin))
	r := float64(float32(rho))
	out := make([]float32, n+1)
	for i, v := range ramp {
		p := float32(math.Pow(float64(v), r))
		out[i] = float32(math.Exp(float64(p*diff + lmin)))
	}
	return out
}

// VPSigmas is k-diffusion's get_sigmas_vp (ComfyUI's VPScheduler): the continuous VP
// schedule σ(t) = √(exp(β_d·t²/2 + β_min·t) − 1) at n float32 times from 1 down to
// epsS, then 0.
func VPSigmas(n int, betaD, betaMin, epsS float64) []float32 {
	ts := linspace32(1, float32(epsS), n)
	bd, bm := float32(betaD), float32(betaMin)
	out := make([]float32, n+1)
	for i, t := range ts {
		out[i] = sqrt32(expm132(bd*(t*t)/2 + bm*t))
	}
	return out
}

// LaplaceSigmas is k-diffusion's get_sigmas_laplace (ComfyUI's LaplaceScheduler, from
// Tiankai et al. 2024): log sigma follows the quantiles of a Laplace(mu, beta)
// distribution over n float32 points of 0 … 1, clamped to [sigmaMin, sigmaMax]. Upstream
// appends no final 0, and neither does this.
func LaplaceSigmas(n int, sigmaMin, sigmaMax, mu, beta float64) []float32 {
	lo, hi := float32(sigmaMin), float32(sigmaMax)
	m, b := float32(mu), float32(beta)
	out := make([]float32, n)
	for i, x := range linspace32(0, 1, n) {
		d := 0.5 - x
		var sign float32
		switch {
		case d > 0:
			sign = 1
		case d < 0:
			sign = -1
		}
		a := d
		if a < 0 {
			a = -a
		}
		lmb := m - b*sign*log32(1-2*a+float32(1e-5))
		out[i] = min(max(float32(math.Exp(float64(lmb))), lo), hi)
	}
	return out
}

// BetaSigmas is ComfyUI's beta_scheduler with explicit alpha and beta (the
// BetaSamplingScheduler node; the "beta" scheduler name uses 0.6 and 0.6).
func BetaSigmas(ms ModelSampling, steps int, alpha, beta float64) []float32 {
	return betaScheduler(ms, steps, alpha, beta)
}

// Align Your Steps (Sabour et al., 2024): the optimised 10-step schedules NVIDIA
// published for each model kind (research.nvidia.com/labs/toronto-ai/AlignYourSteps).
var aysLevels = map[string][]float64{
	"SD1":  {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582},
	"SDXL": {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582},
	"SVD":  {700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002},
}

// AYSModelTypes lists AlignYourStepsScheduler's model_type choices in ComfyUI's order.
var AYSModelTypes = []string{"SD1", "SDXL", "SVD"}

// Optimal Stepsize (Pei et al., 2025, github.com/bebebe666/OptimalSteps): the flow
// models' searched schedules, in sigma.
var optimalLevels = map[string][]float64{
	"FLUX":   {0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001},
	"Wan":    {1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96, 0.946, 0.927, 0.902, 0.864, 0.776, 0.539, 0.208, 0.001},
	"Chroma": {0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917, 0.9, 0.881, 0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451, 0.402, 0.355, 0.311, 0.27, 0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058, 0.048, 0.001},
}

// OptimalStepsModelTypes lists OptimalStepsScheduler's model_type choices in ComfyUI's
// order.
var OptimalStepsModelTypes = []string{"FLUX", "Wan", "Chroma"}

// AYSSigmas is ComfyUI's AlignYourStepsScheduler (comfy_extras/nodes_align_your_steps.py).
func AYSSigmas(modelType string, steps int, denoise float64) ([]float32, error) {
	levels, ok := aysLevels[modelType]
	if !ok {
		return nil, fmt.Errorf("sampling: unknown Align Your Steps model type %q", modelType)
	}
	return tabulatedSigmas(levels, steps, denoise), nil
}

// OptimalStepsSigmas is ComfyUI's OptimalStepsScheduler (comfy_extras/nodes_optimalsteps.py).
func OptimalStepsSigmas(modelType string, steps int, denoise float64) ([]float32, error) {
	levels, ok := optimalLevels[modelType]
	if !ok {
		return nil, fmt.Errorf("sampling: unknown OptimalSteps model type %q", modelType)
	}
	return tabulatedSigmas(levels, steps, denoise), nil
}

// GITSSigmas is ComfyUI's GITSScheduler (comfy_extras/nodes_gits.py): the tabulated
// schedule of the coefficient (rounded to two decimals, which must be one of 0.80,
// 0.85, … 1.50) for 2 … 20 steps, the 20-step one log-linearly interpolated beyond.
func GITSSigmas(coeff float64, steps int, denoise float64) ([]float32, error) {
	// Python's round(coeff, 2) rounds the exact binary value, as FormatFloat does.
	key, err := strconv.ParseFloat(strconv.FormatFloat(coeff, 'f', 2, 64), 64)
	if err != nil {
		return nil, err
	}
	rows, ok := gitsLevels[int(math.Round(key*100))]
	if !ok || math.Abs(key*100-math.Round(key*100)) > 1e-9 {
		return nil, fmt.Errorf("sampling: GITS has no schedule for coeff %.2f (0.80 to 1.50 in steps of 0.05)", key)
	}
	if steps < 2 {
		return nil, fmt.Errorf("sampling: GITS needs at least 2 steps, got %d", steps)
	}
	total, empty := denoisedSteps(steps, denoise)
	if empty {
		return []float32{}, nil
	}
	var levels []float64
	if steps <= 20 {
		levels = append([]float64(nil), rows[steps-2]...)
	} else {
		levels = loglinearInterp(rows[len(rows)-1], steps+1)
	}
	return cutTabulated(levels, total), nil
}

// denoisedSteps is the tabulated nodes' denoise rule: round(steps·denoise) steps
// (half to even) of the full schedule, none at denoise ≤ 0.
func denoisedSteps(steps int, denoise float64) (total int, empty bool) {
	if denoise < 1 {
		if denoise <= 0 {
			return 0, true
		}
		return int(math.RoundToEven(float64(steps) * denoise)), false
	}
	return steps, false
}

// tabulatedSigmas is the body AlignYourStepsScheduler and OptimalStepsScheduler
// share: the table as is when it has steps+1 entries, else log-linearly
// interpolated to that many; the last total+1 of them with the final one set to 0.
func tabulatedSigmas(levels []float64, steps int, denoise float64) []float32 {
	total, empty := denoisedSteps(steps, denoise)
	if empty {
		return []float32{}
	}
	if steps+1 != len(levels) {
		levels = loglinearInterp(levels, steps+1)
	}
	return cutTabulated(levels, total)
}

// cutTabulated keeps the last total+1 levels (Python's [-(total+1):]), zeroes the last
// and converts to float32 (torch.FloatTensor).
func cutTabulated(levels []float64, total int) []float32 {
	levels = levels[max(len(levels)-(total+1), 0):]
	out := make([]float32, len(levels))
	for i, v := range levels {
		out[i] = float32(v)
	}
	out[len(out)-1] = 0
	return out
}

// loglinearInterp resamples a decreasing schedule to n points evenly spaced over the
// same index range, linearly in log sigma (the nodes' loglinear_interp: numpy
// linspace, log, np.interp, exp, in float64).
func loglinearInterp(t []float64, n int) []float64 {
	m := len(t)
	xs := numpyLinspace01(m)
	ys := make([]float64, m)
	for i := range t {
		ys[i] = math.Log(t[m-1-i])
	}
	out := make([]float64, n)
	for i, x := range numpyLinspace01(n) {
		out[n-1-i] = math.Exp(npInterp(x, xs, ys))
	}
	return out
}

// numpyLinspace01 is numpy.linspace(0, 1, n): i·(1/(n−1)), the last point exactly 1.
func numpyLinspace01(n int) []float64 {
	out := make([]float64, n)
	if n == 1 {
		return out
	}
	step := 1 / float64(n-1)
	for i := range out {
		out[i] = float64(i) * step
	}
	out[n-1] = 1
	return out
}

// npInterp is numpy.interp for one point of increasing xp: the end values outside,
// fp[j] on a node, else slope·(x − xp[j]) + fp[j].
func npInterp(x float64, xp, fp []float64) float64 {
	n := len(xp)
	switch {
	case x <= xp[0]:
		return fp[0]
	case x >= xp[n-1]:
		return fp[n-1]
	}
	j := sort.Search(n, func(k int) bool { return xp[k] > x }) - 1
	if xp[j] == x {
		return fp[j]
	}
	slope := (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])
	return slope*(x-xp[j]) + fp[j]
}
