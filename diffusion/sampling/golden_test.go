package sampling

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type schedCase struct {
	Case   string `json:"case"`
	File   string `json:"file"`
	Config struct {
		Shift      float64 `json:"shift"`
		Multiplier float64 `json:"multiplier"`
		MaxShift   float64 `json:"max_shift"`
		BaseShift  float64 `json:"base_shift"`
		Width      int     `json:"width"`
		Height     int     `json:"height"`
	} `json:"config"`
	Tolerance struct{ Abs, Rel float64 } `json:"tolerance"`
}

func modelSamplingFor(t *testing.T, c schedCase) ModelSampling {
	switch {
	case c.Case == "sd15_eps":
		return NewSD(EPS)
	case c.Case == "sd15_v":
		return NewSD(VPrediction)
	case c.Case == "flux_default":
		return NewFlux(1.15)
	case strings.HasPrefix(c.Case, "flux_node_"):
		return NewFlux(FluxShift(c.Config.MaxShift, c.Config.BaseShift, c.Config.Width, c.Config.Height))
	case c.Case == "sd3_shift3":
		return NewFlowShift(c.Config.Shift, c.Config.Multiplier, 1000)
	}
	t.Fatalf("case %s: no model sampling for it", c.Case)
	return nil
}

var ksName = regexp.MustCompile(`^out\.ks\.([a-z_]+)\.s(\d+)(?:\.(d[0-9.]+|dpm_2))?$`)

func TestGoldenSchedulers(t *testing.T) {
	dir, cases := testenv.GoldenCases[schedCase](t, "schedulers")
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			f, err := safetensors.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ms := modelSamplingFor(t, c)
			read := func(name string) []float64 { return readF64(t, f, name) }
			check := func(name string, got []float64) {
				t.Helper()
				compareTol(t, name, got, read(name), c.Tolerance.Abs, c.Tolerance.Rel)
			}
			ksChecked := 0
			for _, info := range f.Tensors() {
				name := info.Name
				if mm := ksName.FindStringSubmatch(name); mm != nil {
					steps, _ := strconv.Atoi(mm[2])
					sampler, denoise := "euler", 1.0
					switch {
					case mm[3] == "dpm_2":
						sampler = "dpm_2"
					case mm[3] != "":
						denoise, _ = strconv.ParseFloat(mm[3][1:], 64)
					}
					s, err := KSamplerSigmas(ms, mm[1], sampler, steps, denoise)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					check(name, f32to64(s))
					ksChecked++
				}
			}
			if ksChecked < 9*4 {
				t.Fatalf("only %d scheduler outputs checked", ksChecked)
			}
			check("out.table.sigmas", f32to64(ms.Sigmas()))
			if d, ok := ms.(*Discrete); ok {
				check("out.table.log_sigmas", f32to64(d.logSigmas))
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

func compareTol(t *testing.T, name string, got, want []float64, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d (got %v, want %v)", name, len(got), len(want), got, want)
		return
	}
	for i := range got {
		g, w := got[i], want[i]
		if math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		if math.IsNaN(g) != math.IsNaN(w) || math.Abs(g-w) > abs+rel*math.Abs(w) {
			t.Errorf("%s[%d] = %.9g, want %.9g", name, i, g, w)
			return
		}
	}
}
