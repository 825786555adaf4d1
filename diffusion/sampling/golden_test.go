package sampling

import (
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type schedCase struct {
	testenv.Case
	Schedulers []string          `json:"schedulers"`
	Steps      []int             `json:"steps"`
	Denoises   []float64         `json:"denoise_variants"`
	DPM2Steps  []int             `json:"dpm_2_variant_steps"`
	Errors     map[string]string `json:"errors"`
	SigmaMin   float64           `json:"sigma_min"`
	SigmaMax   float64           `json:"sigma_max"`
}

// goldenModelSampling builds the model sampling a golden case describes in field.
func goldenModelSampling(t *testing.T, c *testenv.Case, field string) ModelSampling {
	t.Helper()
	spec, err := c.ModelSampling(field)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := New(Config(spec))
	if err != nil {
		t.Fatal(c.FieldError(field, "%v", err))
	}
	return ms
}

// ksVariant is one KSampler sigma schedule of a schedulers case: the tensor
// out.ks.<scheduler>.s<steps>[.d<denoise>|.dpm_2] (family README).
type ksVariant struct {
	scheduler string
	steps     int
	denoise   float64 // 1 unless a .d<denoise> variant
	dpm2      bool
}

var ksTail = regexp.MustCompile(`^s(\d+)(?:\.d([0-9.eE+-]+)|\.(dpm_2))?$`)

// parseKS reads a schedule tensor name against the case's scheduler list (the longest
// scheduler name the rest of the tensor name fits).
func parseKS(name string, schedulers []string) (ksVariant, bool) {
	rest, ok := strings.CutPrefix(name, "out.ks.")
	if !ok {
		return ksVariant{}, false
	}
	var best ksVariant
	found := false
	for _, sch := range schedulers {
		tail, ok := strings.CutPrefix(rest, sch+".")
		m := ksTail.FindStringSubmatch(tail)
		if !ok || m == nil || (found && len(sch) <= len(best.scheduler)) {
			continue
		}
		v := ksVariant{scheduler: sch, denoise: 1, dpm2: m[3] != ""}
		v.steps, _ = strconv.Atoi(m[1])
		if m[2] != "" {
			d, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				continue
			}
			v.denoise = d
		}
		best, found = v, true
	}
	return best, found
}

// TestGoldenSchedulers checks, for every case of golden/schedulers (one model sampling
// each, as its config describes it), KSampler's sigmas for every scheduler, step count
// and variant the manifest lists, the sigma table, the timestep/sigma maps and
// calculate_input/denoised and the noise scalings.
func TestGoldenSchedulers(t *testing.T) {
	_, cases := testenv.GoldenCases[schedCase](t, "schedulers")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			f, err := safetensors.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ms := goldenModelSampling(t, &c.Case, "config")
			if c.Has("config.width") {
				// The ModelSamplingFlux node's shift for this size, recorded as config.shift.
				var node struct {
					MaxShift  float64 `json:"max_shift"`
					BaseShift float64 `json:"base_shift"`
					Width     int     `json:"width"`
					Height    int     `json:"height"`
					Shift     float64 `json:"shift"`
				}
				if err := c.Decode("config", &node); err != nil {
					t.Fatal(err)
				}
				if got := FluxShift(node.MaxShift, node.BaseShift, node.Width, node.Height); math.Abs(got-node.Shift) > 1e-12*math.Abs(node.Shift) {
					t.Errorf("FluxShift(%v, %v, %d, %d) = %v, ComfyUI's node %v", node.MaxShift, node.BaseShift, node.Width, node.Height, got, node.Shift)
				}
			}
			read := func(name string) []float64 {
				t.Helper()
				if _, err := c.Tensor(name); err != nil {
					t.Fatal(err)
				}
				return readF64(t, f, name)
			}
			check := func(name string, got []float64) {
				t.Helper()
				testenv.Close(t, name, got, read(name), c.Tolerance)
			}
			for _, field := range []string{"schedulers", "steps"} {
				if !c.Has(field) {
					t.Fatal(c.FieldError(field, "missing"))
				}
			}
			// Every schedule the manifest promises is a tensor or a listed ComfyUI error.
			want := map[ksVariant]bool{}
			for _, sch := range c.Schedulers {
				for _, n := range c.Steps {
					want[ksVariant{sch, n, 1, false}] = true
					for _, d := range c.Denoises {
						want[ksVariant{sch, n, d, false}] = true
					}
					if slices.Contains(c.DPM2Steps, n) {
						want[ksVariant{sch, n, 1, true}] = true
					}
				}
			}
			for key, msg := range c.Errors {
				v, ok := parseKS(key, c.Schedulers)
				if !ok || !want[v] {
					t.Fatal(c.FieldError("errors."+key, "names no schedule the case lists"))
				}
				t.Logf("%s: ComfyUI raised %s; nothing to compare", key, msg)
				delete(want, v)
			}
			for _, name := range c.Tensors("out.ks.") {
				v, ok := parseKS(name, c.Schedulers)
				if !ok || !want[v] {
					t.Fatal(c.FieldError("io_tensors", "%s is not a schedule of the listed schedulers, steps and variants", name))
				}
				delete(want, v)
				sampler := "euler"
				if v.dpm2 {
					sampler = "dpm_2"
				}
				s, err := KSamplerSigmas(ms, v.scheduler, sampler, v.steps, v.denoise)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				check(name, f32to64(s))
			}
			for v := range want {
				name := fmt.Sprintf("out.ks.%s.s%d", v.scheduler, v.steps)
				if v.dpm2 {
					name += ".dpm_2"
				} else if v.denoise != 1 {
					name += fmt.Sprintf(".d%v", v.denoise)
				}
				t.Fatal(c.FieldError("io_tensors", "lacks %d of the schedules the case's schedulers × steps × variants promise, %s among them", len(want), name))
			}
			check("out.table.sigmas", f32to64(ms.Sigmas()))
			if _, ok := c.IO["out.table.log_sigmas"]; ok {
				d, isDiscrete := ms.(*Discrete)
				if !isDiscrete {
					t.Fatalf("the case has log sigmas, the model sampling (%T) has none", ms)
				}
				check("out.table.log_sigmas", f32to64(d.logSigmas))
			}
			if c.Has("sigma_min") && c.Has("sigma_max") {
				testenv.Close(t, "sigma_min, sigma_max", []float64{float64(ms.SigmaMin()), float64(ms.SigmaMax())}, []float64{c.SigmaMin, c.SigmaMax}, c.Tolerance)
			}
			var ts, sg, pc []float64
			for _, s := range read("in.map.sigma") {
				ts = append(ts, float64(ms.Timestep(float32(s))))
			}
			check("out.map.timestep", ts)
			for _, tt := range read("in.map.t") {
				sg = append(sg, float64(ms.Sigma(float32(tt))))
			}
			check("out.map.sigma", sg)
			for _, p := range read("in.map.percent") {
				pc = append(pc, ms.PercentToSigma(p))
			}
			check("out.map.percent_to_sigma", pc)

			sigma := float32(read("in.calc.sigma")[0])
			x, mo, lat := f32(read("in.calc.x")), f32(read("in.calc.model_output")), f32(read("in.calc.latent_image"))
			out := make([]float32, len(x))
			p := ms.Prediction()
			CalculateInput(p, sigma, x, out)
			check("out.calc.calculate_input", f32to64(out))
			CalculateDenoised(p, sigma, mo, x, out)
			check("out.calc.calculate_denoised", f32to64(out))
			NoiseScaling(p, sigma, x, lat, out, false)
			check("out.calc.noise_scaling", f32to64(out))
			NoiseScaling(p, sigma, x, lat, out, true)
			check("out.calc.noise_scaling_max_denoise", f32to64(out))
			InverseNoiseScaling(p, sigma, x, out)
			check("out.calc.inverse_noise_scaling", f32to64(out))
		})
	}
}

// readF64 reads a tensor as float64, keeping float64 and int64 values exact.
func readF64(t *testing.T, f *safetensors.File, name string) []float64 {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	switch string(tn.DType) {
	case "F64", "I64":
		out := make([]float64, len(tn.Data)/8)
		for i := range out {
			u := binary.LittleEndian.Uint64(tn.Data[8*i:])
			if string(tn.DType) == "F64" {
				out[i] = math.Float64frombits(u)
			} else {
				out[i] = float64(int64(u))
			}
		}
		return out
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return f32to64(v)
}

func f32to64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
