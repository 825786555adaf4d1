package testenv

import (
	"fmt"
	"slices"
	"testing"
)

// upscaleFunction is what every case of the upscale family calls.
const upscaleFunction = "comfy.utils.common_upscale(samples, width, height, upscale_method, crop)"

// Upscale is a case of the golden upscale family: common_upscale of its one input
// tensor (NCHW) with Method to every target size and crop it lists.
type Upscale struct {
	Case
	Method  string
	Input   string
	Outputs []UpscaleOutput
}

// UpscaleOutput is one expected output: out.<W>x<H>.<crop> (family README).
type UpscaleOutput struct {
	Name          string
	Width, Height int
	Crop          string
}

// GoldenUpscales returns the cases of the upscale family, their config checked against
// their tensors: one in. tensor of four dimensions, and an out. tensor for each target
// size and crop, no other.
func GoldenUpscales(t testing.TB) []Upscale {
	t.Helper()
	_, cases := GoldenCases[Case](t, "upscale")
	out := make([]Upscale, 0, len(cases))
	for _, c := range cases {
		var cfg struct {
			Function string   `json:"function"`
			Method   string   `json:"method"`
			Crops    []string `json:"crops"`
			Targets  [][2]int `json:"targets_wxh"`
		}
		must(t, c.Decode("config", &cfg))
		if cfg.Function != upscaleFunction {
			t.Fatal(c.FieldError("config.function", "%q: the tests run %s", cfg.Function, upscaleFunction))
		}
		if cfg.Method == "" || len(cfg.Targets) == 0 || len(cfg.Crops) == 0 {
			t.Fatal(c.FieldError("config", "needs method, targets_wxh and crops"))
		}
		u := Upscale{Case: c, Method: cfg.Method}
		ins := c.Tensors("in.")
		if len(ins) != 1 || len(c.IO[ins[0]].Shape) != 4 {
			t.Fatal(c.FieldError("io_tensors", "in. tensors %v, want one input of shape (B, C, H, W)", ins))
		}
		u.Input = ins[0]
		for _, wh := range cfg.Targets {
			for _, crop := range cfg.Crops {
				o := UpscaleOutput{fmt.Sprintf("out.%dx%d.%s", wh[0], wh[1], crop), wh[0], wh[1], crop}
				if _, err := c.Tensor(o.Name); err != nil {
					t.Fatal(err)
				}
				u.Outputs = append(u.Outputs, o)
			}
		}
		for _, name := range c.Tensors("out.") {
			if !slices.ContainsFunc(u.Outputs, func(o UpscaleOutput) bool { return o.Name == name }) {
				t.Fatal(c.FieldError("io_tensors", "%s is not one of the targets × crops", name))
			}
		}
		out = append(out, u)
	}
	return out
}
