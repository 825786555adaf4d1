package testenv

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records what a helper reports instead of ending the test.
type fakeTB struct {
	testing.TB
	fatal, skip string
	errors      []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) { f.Skipf("%s", fmt.Sprint(args...)) }
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

// capture runs fn against a fakeTB on its own goroutine (Fatal and Skip end it).
func capture(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func mkdir(t *testing.T, parts ...string) string {
	t.Helper()
	dir := filepath.Join(parts...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDirsFromEnvironment: each folder honours its variable; ReferenceDir is the
// "reference" folder inside $FORGEFLOW_SHARED_DIR, not the shared folder itself.
func TestDirsFromEnvironment(t *testing.T) {
	shared := t.TempDir()
	ref := mkdir(t, shared, "reference")
	golden := mkdir(t, t.TempDir(), "elsewhere")
	t.Setenv("FORGEFLOW_SHARED_DIR", shared)
	t.Setenv("FORGEFLOW_GOLDEN_DIR", golden)
	if got := SharedDir(t); got != shared {
		t.Errorf("SharedDir = %s, want %s", got, shared)
	}
	if got := ReferenceDir(t); got != ref {
		t.Errorf("ReferenceDir = %s, want %s", got, ref)
	}
	if got := GoldenDir(t); got != golden {
		t.Errorf("GoldenDir = %s, want %s", got, golden)
	}
}

// TestMissingFolderSkipsOrFails: an absent folder skips, naming the variable; under
// CI=true it fails.
func TestMissingFolderSkipsOrFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent")
	t.Setenv("FORGEFLOW_SHARED_DIR", missing)
	t.Setenv("CI", "")
	f := capture(t, func(tb testing.TB) { ReferenceDir(tb) })
	if !strings.Contains(f.skip, "FORGEFLOW_SHARED_DIR") || !strings.Contains(f.skip, filepath.Join(missing, "reference")) || f.fatal != "" {
		t.Errorf("skip %q, fatal %q", f.skip, f.fatal)
	}
	t.Setenv("CI", "true")
	f = capture(t, func(tb testing.TB) { SharedDir(tb) })
	if !strings.Contains(f.fatal, "CI=true") || f.skip != "" {
		t.Errorf("under CI: skip %q, fatal %q", f.skip, f.fatal)
	}
}

// manifestCase is a test case type that embeds Case.
type manifestCase struct {
	Case
	Seed int `json:"seed"`
}

func TestGoldenCasesValidates(t *testing.T) {
	for _, c := range []struct {
		name, manifest, want string
	}{
		{"no cases", `{"cases": []}`, "lists no cases"},
		{"not json", `{"cases": [`, "manifest.json"},
		{"no file", `{"cases": [{"case": "a"}]}`, "field file: missing"},
		{"no name", `{"cases": [{"file": "a.safetensors"}]}`, "field case: missing"},
		{"path in file", `{"cases": [{"case": "a", "file": "../a.safetensors"}]}`, "not a file name"},
		{"bad tolerance", `{"cases": [{"case": "a", "file": "a", "tolerance": {"abs": 1}}]}`, "needs both abs and rel"},
		{"negative tolerance", `{"cases": [{"case": "a", "file": "a", "tolerance": {"abs": -1, "rel": 0}}]}`, "non-negative"},
		{"wrong type", `{"cases": [{"case": "a", "file": "a", "seed": "x"}]}`, `case "a"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, filepath.Join(mkdir(t, root, "fam"), "manifest.json"), c.manifest)
			t.Setenv("FORGEFLOW_GOLDEN_DIR", root)
			f := capture(t, func(tb testing.TB) { GoldenCases[manifestCase](tb, "fam") })
			if !strings.Contains(f.fatal, c.want) {
				t.Errorf("fatal %q, want %q", f.fatal, c.want)
			}
		})
	}
}

func TestCaseFields(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(mkdir(t, root, "fam"), "manifest.json"), `{"cases": [{"case": "x", "file": "x.bin", "seed": 7,
		"tolerance": {"abs": 0.5, "rel": 0.25, "note": "n"}, "config": {"kwargs": {"width": 3}, "none": null},
		"io_tensors": {"out.b": {"dtype": "float32", "shape": [2, 3]}, "in.a": {"dtype": "int64", "shape": [4]}, "out.a": {"dtype": "float32", "shape": []}}}]}`)
	t.Setenv("FORGEFLOW_GOLDEN_DIR", root)
	dir, cases := GoldenCases[manifestCase](t, "fam")
	c := cases[0]
	if c.Name != "x" || c.Seed != 7 || c.Path() != filepath.Join(dir, "x.bin") || c.Family() != "fam" {
		t.Fatalf("case %+v", c)
	}
	if c.Tolerance.Limit(-2) != 1 || !c.Tolerance.Given() {
		t.Errorf("tolerance %+v", c.Tolerance)
	}
	var w int
	if err := c.Decode("config.kwargs.width", &w); err != nil || w != 3 {
		t.Errorf("width %d, %v", w, err)
	}
	if !c.Has("config.kwargs") || c.Has("config.none") || c.Has("config.kwargs.height") || c.Has("seed.x") {
		t.Error("Has")
	}
	for field, want := range map[string]string{"config.kwargs.height": "field config.kwargs.height: missing", "seed.x": "seed is not an object"} {
		if err := c.Decode(field, &w); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `fam/manifest.json: case "x"`) {
			t.Errorf("%s: %v", field, err)
		}
	}
	var s string
	if err := c.Decode("seed", &s); err == nil || !strings.Contains(err.Error(), "field seed") {
		t.Errorf("seed as string: %v", err)
	}
	if sp, err := c.Tensor("out.b"); err != nil || sp.Numel() != 6 {
		t.Errorf("out.b %+v %v", sp, err)
	}
	if _, err := c.Tensor("out.c"); err == nil || !strings.Contains(err.Error(), "io_tensors") {
		t.Errorf("out.c: %v", err)
	}
	if got := strings.Join(c.Tensors("out."), ","); got != "out.a,out.b" {
		t.Errorf("out tensors %s", got)
	}
}

func TestClose(t *testing.T) {
	tol := Tolerance{Abs: 0.1, Rel: 0.1, given: true}
	nan, inf := math.NaN(), math.Inf(1)
	for _, c := range []struct {
		name      string
		got, want []float64
		tol       Tolerance
		ok        bool
	}{
		{"within", []float64{1.15, -2.2}, []float64{1, -2}, tol, true},
		{"outside", []float64{1.25}, []float64{1}, tol, false},
		{"nan expected and got", []float64{nan}, []float64{nan}, tol, true},
		{"nan got", []float64{nan}, []float64{1}, tol, false},
		{"nan expected", []float64{1}, []float64{nan}, tol, false},
		{"inf", []float64{inf}, []float64{inf}, tol, true},
		{"wrong inf", []float64{-inf}, []float64{inf}, tol, false},
		{"length", []float64{1}, []float64{1, 2}, tol, false},
		{"no tolerance", []float64{1}, []float64{1}, Tolerance{}, false},
	} {
		f := capture(t, func(tb testing.TB) { Close(tb, c.name, c.got, c.want, c.tol) })
		if ok := len(f.errors) == 0; ok != c.ok {
			t.Errorf("%s: ok %v, want %v (%v)", c.name, ok, c.ok, f.errors)
		}
	}
}

func TestModelSamplingDescriptions(t *testing.T) {
	for _, c := range []struct {
		desc string
		want ModelSampling
	}{
		{"ModelSamplingDiscrete+EPS (SD1.5 linear betas)", ModelSampling{Kind: "discrete", Prediction: "eps", BetaSchedule: "linear"}},
		{"ModelSamplingDiscrete+V_PREDICTION (SD1.5 linear betas)", ModelSampling{Kind: "discrete", Prediction: "v_prediction", BetaSchedule: "linear"}},
		{"ModelSamplingDiscrete+V_PREDICTION cosine betas zsnr timesteps 500", ModelSampling{Kind: "discrete", Prediction: "v_prediction", BetaSchedule: "cosine", ZSNR: true, Timesteps: 500}},
		{"comfy.model_base.BaseModel(ModelType.EPS), ModelSamplingDiscrete SD1.5 betas", ModelSampling{Kind: "discrete", Prediction: "eps"}},
		{"ModelSamplingFlux+CONST shift 1.15", ModelSampling{Kind: "flux", Prediction: "const", Shift: 1.15}},
		{"ModelSamplingDiscreteFlow+CONST shift 3.0", ModelSampling{Kind: "discrete_flow", Prediction: "const", Shift: 3}},
		{"ModelSamplingSD3 node (ModelSamplingDiscreteFlow+CONST) shift=6", ModelSampling{Kind: "discrete_flow", Prediction: "const", Shift: 6, Multiplier: 1000}},
		{"ModelSamplingAuraFlow shift 1.73", ModelSampling{Kind: "discrete_flow", Prediction: "const", Shift: 1.73, Multiplier: 1}},
		{"comfy.model_base.Flux(ModelType.FLUX)", ModelSampling{Kind: "flux", Prediction: "const"}},
		{"BaseModel(ModelType.FLOW) shift 2.5 multiplier 1.0", ModelSampling{Kind: "discrete_flow", Prediction: "const", Shift: 2.5, Multiplier: 1}},
	} {
		ms, err := parseModelSampling(c.desc)
		if err != nil || ms != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.desc, ms, err, c.want)
		}
	}
	for desc, want := range map[string]string{
		"eps":                                     "no model-sampling class",
		"ModelSamplingContinuousEDM+EDM":          "ModelSamplingContinuousEDM is not supported",
		"ModelSamplingDiscrete+X0":                "prediction type X0 is not supported",
		"ModelSamplingDiscrete":                   "without a prediction type",
		"ModelSamplingDiscrete+EPS shift 3":       "no shift",
		"ModelSamplingFlux+EPS":                   "predicts a velocity (CONST), not EPS",
		"ModelSamplingFlux+CONST linear betas":    "no beta schedule",
		"ModelSamplingDiscrete+EPS warped betas":  `unknown beta schedule "warped"`,
		"ModelSamplingFlux ModelSamplingDiscrete": "both flux and discrete",
		"ModelSamplingFlux+CONST multiplier 3":    "no multiplier",
		"ModelSamplingDiscrete+EPS timesteps 2.5": "not a positive integer",
	} {
		if _, err := parseModelSampling(desc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", desc, err, want)
		}
	}
}

func TestModelSamplingSettings(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(mkdir(t, root, "fam"), "manifest.json"), `{"cases": [
	 {"case": "a", "file": "a", "config": {"model_sampling": "ModelSamplingDiscrete+EPS", "beta_schedule": "sqrt_linear", "linear_start": 0.0001, "linear_end": 0.02, "timesteps": 1000, "zsnr": true, "used_by": "x"}},
	 {"case": "b", "file": "b", "config": {"model_sampling": "ModelSamplingFlux node (ModelSamplingFlux+CONST)", "max_shift": 1.15, "base_shift": 0.5, "width": 768, "height": 1344, "shift": 1.2, "timesteps": 10000}},
	 {"case": "c", "file": "c", "config": {"model_sampling": "ModelSamplingFlux+CONST", "width": 768, "height": 1344}},
	 {"case": "d", "file": "d", "config": {"model_sampling": "ModelSamplingDiscrete+EPS", "sigma_data": 1}},
	 {"case": "e", "file": "e", "config": {"model_sampling": "ModelSamplingDiscreteFlow+CONST shift 3", "shift": 6}},
	 {"case": "f", "file": "f", "config": {"model_sampling": "ModelSamplingDiscrete+EPS", "timesteps": "many"}},
	 {"case": "g", "file": "g", "config": {"beta_schedule": "linear"}},
	 {"case": "h", "file": "h", "config": 3}]}`)
	t.Setenv("FORGEFLOW_GOLDEN_DIR", root)
	_, cases := GoldenCases[Case](t, "fam")
	for i, want := range []ModelSampling{
		{Kind: "discrete", Prediction: "eps", BetaSchedule: "sqrt_linear", LinearStart: 0.0001, LinearEnd: 0.02, Timesteps: 1000, ZSNR: true},
		{Kind: "flux", Prediction: "const", Shift: 1.2, Timesteps: 10000},
	} {
		if ms, err := cases[i].ModelSampling("config"); err != nil || ms != want {
			t.Errorf("%s: %+v, %v; want %+v", cases[i].Name, ms, err, want)
		}
	}
	for i, want := range map[int]string{
		2: "field config.shift: missing",
		3: "field config.sigma_data: unknown model-sampling setting",
		4: "field config.shift: 6 contradicts",
		5: "field config.timesteps: not a positive integer",
		6: "field config.model_sampling: missing",
		7: "field config: neither",
	} {
		if _, err := cases[i].ModelSampling("config"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", cases[i].Name, err, want)
		}
	}
}

// TestGoldenVocabDirByContent: the tokenizer's data files are found by what they hold,
// whatever their names.
func TestGoldenVocabDirByContent(t *testing.T) {
	root := t.TempDir()
	dir := mkdir(t, root, "tokenizer")
	write(t, filepath.Join(dir, "manifest.json"), `{"cases": [{"case": "a", "file": "c1.bin"}]}`)
	write(t, filepath.Join(dir, "c1.bin"), "not a vocabulary")
	var vocab strings.Builder
	vocab.WriteString("{")
	for i := range 300 {
		fmt.Fprintf(&vocab, "%q: %d,", fmt.Sprint("t", i), i)
	}
	vocab.WriteString(`"end": 300}`)
	write(t, filepath.Join(dir, "d7.dat"), vocab.String())
	write(t, filepath.Join(dir, "d8.dat"), "#version: 0.2\na b\n")
	write(t, filepath.Join(dir, "tokenizer_config.json"), `{"model_max_length": 77, "bos_token": "x"}`)
	write(t, filepath.Join(dir, "README.md"), "# tokenizer")
	t.Setenv("FORGEFLOW_GOLDEN_DIR", root)
	got := GoldenVocabDir(t)
	for name, want := range map[string]string{"vocab.json": vocab.String(), "merges.txt": "#version: 0.2\na b\n"} {
		b, err := os.ReadFile(filepath.Join(got, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %.20q, %v", name, b, err)
		}
	}
	write(t, filepath.Join(dir, "d9.dat"), "#version: 0.2\nc d\n")
	f := capture(t, func(tb testing.TB) { GoldenVocabDir(tb) })
	if !strings.Contains(f.fatal, "2 merge lists") {
		t.Errorf("two merge lists: %q", f.fatal)
	}
}
