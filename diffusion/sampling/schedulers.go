package sampling

import (
	"fmt"
	"math"
	"slices"
)

// A Scheduler returns steps+1 sigmas (the last one 0, except where ComfyUI's scheduler
// itself ends differently) for a model sampling.
type Scheduler func(ms ModelSampling, steps int) []float32

// schedulerTable is ComfyUI 0.3.64's SCHEDULER_HANDLERS in its order (the order of the
// scheduler combo lists).
var schedulerTable = []struct {
	name string
	fn   Scheduler
}{
	{"simple", simpleScheduler},
	{"sgm_uniform", func(ms ModelSampling, n int) []float32 { return normalScheduler(ms, n, true) }},
	{"karras", func(ms ModelSampling, n int) []float32 {
		return karrasSigmas(n, float64(ms.SigmaMin()), float64(ms.SigmaMax()), 7)
	}},
	{"exponential", func(ms ModelSampling, n int) []float32 {
		return exponentialSigmas(n, float64(ms.SigmaMin()), float64(ms.SigmaMax()))
	}},
	{"ddim_uniform", ddimScheduler},
	{"beta", func(ms ModelSampling, n int) []float32 { return betaScheduler(ms, n, 0.6, 0.6) }},
	{"normal", func(ms ModelSampling, n int) []float32 { return normalScheduler(ms, n, false) }},
	{"linear_quadratic", linearQuadraticScheduler},
	{"kl_optimal", func(ms ModelSampling, n int) []float32 {
		return klOptimalSigmas(n, float64(ms.SigmaMin()), float64(ms.SigmaMax()))
	}},
}

// SchedulerNames lists the scheduler names in ComfyUI's order.
func SchedulerNames() []string {
	names := make([]string, len(schedulerTable))
	for i, s := range schedulerTable {
		names[i] = s.name
	}
	return names
}

// LookupScheduler returns the named scheduler.
func LookupScheduler(name string) (Scheduler, error) {
	for _, s := range schedulerTable {
		if s.name == name {
			return s.fn, nil
		}
	}
	return nil, fmt.Errorf("sampling: unknown scheduler %q", name)
}

// KSamplerSigmas is the sigma list ComfyUI's KSampler samples with: for denoise < 1 it
// schedules int(steps/denoise) steps and keeps the last steps+1 sigmas; denoise ≤ 0
// gives none. For a sampler marked DiscardPenultimate it schedules one step more and
// drops the second-to-last sigma.
func KSamplerSigmas(ms ModelSampling, scheduler, sampler string, steps int, denoise float64) ([]float32, error) {
	fn, err := LookupScheduler(scheduler)
	if err != nil {
		return nil, err
	}
	smp, err := LookupSampler(sampler)
	if err != nil {
		return nil, err
	}
	if steps < 0 {
		return nil, fmt.Errorf("sampling: negative step count %d", steps)
	}
	calc := func(n int) []float32 {
		drop := smp.DiscardPenultimate
		if drop {
			n++
		}
		s := fn(ms, n)
		if drop && len(s) >= 2 {
			s = append(s[:len(s)-2:len(s)-2], s[len(s)-1])
		}
		return s
	}
	if denoise > 0.9999 {
		return calc(steps), nil
	}
	if denoise <= 0 {
		return []float32{}, nil
	}
	s := calc(int(float64(steps) / denoise))
	if len(s) > steps+1 {
		s = s[len(s)-(steps+1):]
	}
	return s, nil
}

// simpleScheduler walks the model's sigma table from the top in equal strides.
func simpleScheduler(ms ModelSampling, steps int) []float32 {
	table := ms.Sigmas()
	ss := float64(len(table)) / float64(steps)
	out := make([]float32, 0, steps+1)
	for x := 0; x < steps; x++ {
		out = append(out, table[len(table)-1-int(float64(x)*ss)])
	}
	return append(out, 0)
}

// ddimScheduler takes every (len/steps)-th table entry from index 1 upwards, reversed,
// with a trailing 0 unless the table starts at (almost) 0.
func ddimScheduler(ms ModelSampling, steps int) []float32 {
	table := ms.Sigmas()
	var out []float32
	if math.Abs(float64(table[1])) <= 1e-5 {
		steps++
	} else {
		out = append(out, 0)
	}
	ss := max(len(table)/steps, 1)
	for x := 1; x < len(table); x += ss {
		out = append(out, table[x])
	}
	slices.Reverse(out)
	return out
}

// normalScheduler spaces timesteps evenly between the model's largest and smallest
// sigma; the sgm variant (sgm_uniform) drops the last timestep instead of ending on it.
func normalScheduler(ms ModelSampling, steps int, sgm bool) []float32 {
	start := ms.Timestep(ms.SigmaMax())
	end := ms.Timestep(ms.SigmaMin())
	appendZero := true
	var ts []float32
	if sgm {
		ts = linspace32(start, end, steps+1)[:steps]
	} else {
		if math.Abs(float64(ms.Sigma(end))) <= 1e-5 {
			steps++
			appendZero = false
		}
		ts = linspace32(start, end, steps)
	}
	out := make([]float32, 0, len(ts)+1)
	for _, t := range ts {
		out = append(out, ms.Sigma(t))
	}
	if appendZero {
		out = append(out, 0)
	}
	return out
}

// karrasSigmas is k-diffusion's get_sigmas_karras: a ramp in sigma^(1/rho) space.
func karrasSigmas(n int, sigmaMin, sigmaMax, rho float64) []float32 {
	ramp := linspace32(0, 1, n)
	// The two roots and their difference are Python floats; the ramp is float32.
	minInv, maxInv := math.Pow(sigmaMin, 1/rho), math.Pow(sigmaMax, 1/rho)
	diff := float32(minInv - maxInv)
	out := make([]float32, n+1)
	for i, r := range ramp {
		out[i] = float32(math.Pow(float64(float32(maxInv)+r*diff), rho))
	}
	return out
}

// exponentialSigmas is k-diffusion's get_sigmas_exponential: evenly spaced in log sigma.
func exponentialSigmas(n int, sigmaMin, sigmaMax float64) []float32 {
	ls := linspace32(float32(math.Log(sigmaMax)), float32(math.Log(sigmaMin)), n)
	out := make([]float32, n+1)
	for i, v := range ls {
		out[i] = float32(math.Exp(float64(v)))
	}
	return out
}

// betaScheduler places timesteps at the quantiles of a Beta(alpha, beta) distribution
// ("Beta Sampling is All You Need"), skipping repeats.
func betaScheduler(ms ModelSampling, steps int, alpha, beta float64) []float32 {
	table := ms.Sigmas()
	total := float64(len(table) - 1)
	out := make([]float32, 0, steps+1)
	last := -1.0
	for i := 0; i < steps; i++ {
		q := 1 - float64(i)/float64(steps)
		t := math.RoundToEven(betaPPF(q, alpha, beta) * total)
		if t != last {
			out = append(out, table[int(t)])
		}
		last = t
	}
	return append(out, 0)
}

// linearQuadraticScheduler is ComfyUI's linear_quadratic_schedule (from Mochi): linear
// for the first half of the steps up to threshold 0.025, quadratic after, scaled by
// sigma_max.
func linearQuadraticScheduler(ms ModelSampling, steps int) []float32 {
	const threshold = 0.025
	var sched []float64
	if steps == 1 {
		sched = []float64{1, 0}
	} else {
		linear := steps / 2
		for i := 0; i < linear; i++ {
			sched = append(sched, float64(i)*threshold/float64(linear))
		}
		diff := float64(linear) - threshold*float64(steps)
		quad := float64(steps - linear)
		qc := diff / (float64(linear) * quad * quad)
		lc := threshold/float64(linear) - 2*diff/(quad*quad)
		c := qc * float64(linear*linear)
		for i := linear; i < steps; i++ {
			fi := float64(i)
			sched = append(sched, qc*fi*fi+lc*fi+c)
		}
		sched = append(sched, 1)
		for i := range sched {
			sched[i] = 1 - sched[i]
		}
	}
	top := ms.SigmaMax()
	out := make([]float32, len(sched))
	for i, v := range sched {
		out[i] = float32(v) * top
	}
	return out
}

// klOptimalSigmas is the "Align Your Steps"-paper KL-optimal schedule: tan of a linear
// blend of atan(sigma_max) and atan(sigma_min). One step divides by zero, as in ComfyUI
// (NaN sigmas).
func klOptimalSigmas(n int, sigmaMin, sigmaMax float64) []float32 {
	out := make([]float32, n+1)
	amin, amax := float32(math.Atan(sigmaMin)), float32(math.Atan(sigmaMax))
	for i := 0; i < n; i++ {
		idx := float32(i) / float32(n-1)
		out[i] = float32(math.Tan(float64(idx*amin + (1-idx)*amax)))
	}
	return out
}
