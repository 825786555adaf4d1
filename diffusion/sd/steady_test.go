package sd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// A steady-state sampling step makes no Go heap allocation in forgeflow's code: not in
// diffusion/ (the guider and the samplers reuse their buffers, the UNet's shape arguments
// stay on its stack) and not in gpu/ (recycled tensor headers and op calls, loops handed
// to parked workers in reused slots, kernel scratch from free lists that survive
// collections). The split inside/outside gpu/ comes from the memory profile, whose
// records are published at collections: one record of a run's set-up can land on the
// wrong side of a snapshot, so each side may show that one object across the N extra
// steps (1/N per step) and no more.
const siteTolerance = 1.0/3 + 1e-9 // measureSteps(run, 3)

// stepLimit bounds the process's whole Mallocs difference per step. It is not 0 because
// the Go runtime itself allocates now and then (it moved between −0.3 and 1.0 per step
// over repeated runs with no record in any forgeflow frame); a leak in our code, one
// object per op, would show as hundreds.
const stepLimit = 2

// TestSteadyStateSampling samples a tiny SD1 model (random F16 weights the test writes
// itself) with euler, with the multistep dpmpp_2m and with euler_ancestral (fresh noise
// each step) at CFG 7 (cond and uncond in one batch each step) for N and for 2N steps:
// what the longer run allocates beyond the shorter one, divided by N, is what a step
// allocates once the first one has set up its buffers. A memory profile taken during the runs splits those allocations into the ones
// made inside gpu/ and the ones made elsewhere (diffusion/: the UNet, the guider, the
// sampler), and names the sites that remain.
func TestSteadyStateSampling(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	spec := sd.TinyRandomSpec(detect.FamilySD1)
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{SkipVAE: true, SkipCLIP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	r := rand.New(rand.NewPCG(3, 4))
	randT := func(shape ...int) *gpu.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		g, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	pos := sd.Conditioning{sd.NewCond(randT(1, 77, spec.UNet.Context), nil)}
	neg := sd.Conditioning{sd.NewCond(randT(1, 77, spec.UNet.Context), nil)}
	latent := &sd.Latent{Samples: randT(1, 4, 16, 16)}
	ctx := context.Background()
	for _, sampler := range []string{"euler", "dpmpp_2m", "euler_ancestral"} {
		t.Run(sampler, func(t *testing.T) {
			run := func(steps int) {
				out, err := sd.KSample(ctx, ck.Model, pos, neg, latent, sd.KSamplerParams{
					Seed: 7, Steps: steps, CFG: 7, Sampler: sampler, Scheduler: "karras", Denoise: 1,
					StartStep: -1, LastStep: -1,
				}, func(int, int, []float32, [4]int) {})
				if err != nil {
					t.Fatal(err)
				}
				out.Samples.Release()
			}
			st := measureSteps(run, 3)
			t.Logf("%s: per extra step %.1f Go heap allocations: %.1f inside gpu/, %.1f outside gpu/, %.1f with no forgeflow frame",
				sampler, st.total, st.gpu, st.outside, st.other)
			for _, s := range st.sites {
				t.Logf("  outside gpu/: %s", s)
			}
			for _, s := range st.gpuSites {
				t.Logf("  inside gpu/: %s", s)
			}
			if st.outside > siteTolerance {
				t.Errorf("%s: a steady-state step allocates %.1f times outside gpu/ (limit 0); sites: %s",
					sampler, st.outside, strings.Join(st.sites, "; "))
			}
			if st.gpu > siteTolerance {
				t.Errorf("%s: a steady-state step allocates %.1f times inside gpu/ (limit 0); sites: %s",
					sampler, st.gpu, strings.Join(st.gpuSites, "; "))
			}
			if st.total > stepLimit {
				t.Errorf("%s: a steady-state step allocates %.1f times in all (limit %d)", sampler, st.total, stepLimit)
			}
		})
	}
}

// stepAllocs is what a sampling step allocates beyond the first.
type stepAllocs struct {
	total               float64  // runtime.MemStats.Mallocs
	gpu, outside, other float64  // by the innermost forgeflow frame of each allocation
	sites               []string // the allocation sites outside gpu/, per step
	gpuSites            []string // the busiest ones inside gpu/
}

// measureSteps runs run(n) and run(2n) three times after a warm-up and keeps the
// quietest difference (a collection in the middle of a run can make the workers refill a
// pool once).
func measureSteps(run func(steps int), n int) stepAllocs {
	run(2 * n) // weight panels, pools and workspaces
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	var best stepAllocs
	for k := range 3 {
		p0, m0 := profile()
		run(n)
		p1, m1 := profile()
		run(2 * n)
		p2, m2 := profile()
		st := stepAllocs{total: float64(int64(m2-m1)-int64(m1-m0)) / float64(n)}
		perSite := map[string]int64{}
		for site, c := range p2 {
			d := (c - p1[site]) - (p1[site] - p0[site])
			if d <= 0 || site == testSite { // testSite: the measurement's own bookkeeping
				continue
			}
			perSite[site] += d
			switch {
			case strings.HasPrefix(site, "github.com/forgeflow/forgeflow/gpu"):
				st.gpu += float64(d) / float64(n)
			case site == "":
				st.other += float64(d) / float64(n)
			default:
				st.outside += float64(d) / float64(n)
			}
		}
		type sc struct {
			site string
			n    int64
		}
		var all []sc
		for s, c := range perSite {
			all = append(all, sc{s, c})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].site < all[j].site })
		inGPU := 0
		for _, s := range all {
			line := fmt.Sprintf("%.1f %s", float64(s.n)/float64(n), s.site)
			switch {
			case !strings.HasPrefix(s.site, "github.com/forgeflow/forgeflow/gpu"):
				st.sites = append(st.sites, line)
			case inGPU < 8:
				st.gpuSites = append(st.gpuSites, line)
				inGPU++
			}
		}
		if k == 0 || st.total < best.total {
			best = st
		}
	}
	return best
}

// profile returns the objects allocated so far per site (the innermost frame in this
// module, "" for none, as "function file:line") and the Mallocs count.
func profile() (map[string]int64, uint64) {
	// A record reaches the profile after the collections that follow its allocation.
	for range 3 {
		runtime.GC()
	}
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+64)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := map[string]int64{}
	for i := range recs {
		out[siteOf(recs[i].Stack())] += recs[i].AllocObjects
	}
	return out, ms.Mallocs
}

// testSite stands for the allocations of this test's own code.
const testSite = "test"

// siteOf names the innermost frame of stack in this module (testSite for this file's).
func siteOf(stack []uintptr) string {
	frames := runtime.CallersFrames(stack)
	for {
		fr, more := frames.Next()
		if strings.HasPrefix(fr.Function, "github.com/forgeflow/forgeflow/diffusion/sd_test.") {
			return testSite
		}
		if strings.HasPrefix(fr.Function, "github.com/forgeflow/forgeflow/") {
			return fmt.Sprintf("%s %s:%d", fr.Function, filepath.Base(fr.File), fr.Line)
		}
		if !more {
			return ""
		}
	}
}
