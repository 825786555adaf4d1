package nodes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
)

// pic is a test value type with a check.
type pic struct{ w int }

func checkPic(p *pic) error {
	if p == nil || p.w <= 0 {
		return errors.New("empty picture")
	}
	return nil
}

// sampler is a typed node with one input of each kind.
type sampler struct {
	Pic     *pic     `input:"pic"`
	Seed    uint64   `input:"seed"`
	Steps   int      `input:"steps"`
	CFG     float64  `input:"cfg"`
	Name    string   `input:"name"`
	Text    string   `input:"text"`
	Flag    bool     `input:"flag"`
	Mask    *pic     `input:"mask"`
	Denoise *float64 `input:"denoise"`
	Any     any      `input:"any"`
	Mode    string   `input:"mode"`

	prefix string // copied from the registered value
}

func (*sampler) Schema() graph.Schema {
	return graph.Schema{Name: "Sampler", Inputs: []graph.Input{
		{Name: "pic", Type: "PIC"},
		{Name: "seed", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(uint64(math.MaxUint64)), ControlAfterGenerate: true},
		{Name: "steps", Type: graph.TypeInt, Default: 20, Min: graph.Num(1), Max: graph.Num(10000)},
		{Name: "cfg", Type: graph.TypeFloat, Default: 8.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.1)},
		{Name: "name", Type: graph.TypeCombo, Choices: func() []string { return []string{"euler", "heun"} }},
		{Name: "text", Type: graph.TypeString, Multiline: graph.On},
		{Name: "flag", Type: graph.TypeBoolean, Default: false},
		{Name: "mask", Type: "PIC", Section: graph.Optional},
		{Name: "denoise", Type: graph.TypeFloat, Section: graph.Optional, Min: graph.Num(0.0), Max: graph.Num(1.0)},
		{Name: "any", Type: graph.TypeAny, Section: graph.Optional},
		{Name: "mode", Type: graph.TypeCombo, ComboV3: true, Section: graph.Optional, Choices: func() []string { return []string{"a"} }},
		{Name: "unique_id", Type: "UNIQUE_ID", Section: graph.Hidden, Plain: true},
	}, Outputs: []graph.Output{{Type: "PIC", Name: "PIC"}, {Type: graph.TypeString, Name: "STRING"}}}
}

func (s *sampler) Run(ctx context.Context, env *Env) (Result, error) {
	return Outputs(s.Pic, s.prefix+s.Name)
}

func typedRegistry(t *testing.T, nodes ...Typed) *Registry {
	t.Helper()
	r := NewRegistry()
	if err := r.AddTypes(Value("PIC", checkPic)); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(nodes...); err != nil {
		t.Fatal(err)
	}
	return r
}

func samplerInputs() Inputs {
	return Inputs{"pic": &pic{w: 2}, "seed": uint64(math.MaxUint64), "steps": int64(20), "cfg": 7.5,
		"name": "heun", "text": "a cat", "flag": true}
}

// decoded runs the sampler and returns the copy its Run saw.
func decoded(t *testing.T, in Inputs) (*sampler, error) {
	t.Helper()
	r := typedRegistry(t, &sampler{prefix: "p:"})
	n, _ := r.Lookup("Sampler")
	tn := n.(*typedNode)
	v, err := tn.decode(in, false)
	if err != nil {
		return nil, err
	}
	return v.(*sampler), nil
}

func TestTypedDecode(t *testing.T) {
	s, err := decoded(t, samplerInputs())
	if err != nil {
		t.Fatal(err)
	}
	want := &sampler{Pic: &pic{w: 2}, Seed: math.MaxUint64, Steps: 20, CFG: 7.5, Name: "heun", Text: "a cat", Flag: true, prefix: "p:"}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("decoded %+v, want %+v", s, want)
	}
	in := samplerInputs()
	in["denoise"], in["mask"], in["any"] = 0.5, &pic{w: 1}, "x"
	if s, err = decoded(t, in); err != nil || s.Denoise == nil || *s.Denoise != 0.5 || s.Mask.w != 1 || s.Any != "x" {
		t.Fatalf("optional inputs: %+v, %v", s, err)
	}
	in["mode"] = "z" // a V3 combo is not checked against its list, as in ComfyUI
	if s, err = decoded(t, in); err != nil || s.Mode != "z" {
		t.Fatalf("v3 combo: %+v, %v", s, err)
	}
	in["mask"] = nil // a None link is an absent optional input
	if s, err = decoded(t, in); err != nil || s.Mask != nil {
		t.Fatalf("nil optional mask: %+v, %v", s, err)
	}
}

func TestTypedDecodeErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		value any
		want  string
	}{
		{"missing required", "steps", nil, `input "steps": missing`},
		{"below min", "steps", int64(0), `input "steps": 0 is outside [1, 10000]`},
		{"above max", "cfg", 100.5, `input "cfg": 100.5 is outside [0.0, 100.0]`},
		{"NaN", "cfg", math.NaN(), `input "cfg": NaN is outside`},
		{"negative seed", "seed", int64(-1), `input "seed": -1 is outside [0, 18446744073709551615]`},
		{"not an int", "steps", "20", `input "steps": want INT, got string`},
		{"fraction", "steps", 2.5, "want INT"},
		{"not in list", "name", "magic", `input "name": "magic" is not one of ["euler" "heun"]`},
		{"not a bool", "flag", "yes", "want BOOLEAN"},
		{"wrong link type", "pic", "x.png", `input "pic": want PIC, got string`},
		{"failed check", "pic", &pic{}, `input "pic": empty picture`},
		{"typed nil runs the check", "pic", (*pic)(nil), "empty picture"},
		{"optional bounds", "denoise", 2.0, `input "denoise": 2 is outside`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := samplerInputs()
			if tc.value == nil {
				delete(in, tc.input)
			} else {
				in[tc.input] = tc.value
			}
			_, err := decoded(t, in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTypedRun(t *testing.T) {
	r := typedRegistry(t, &sampler{prefix: "p:"})
	n, _ := r.Lookup("Sampler")
	res, err := n.Run(context.Background(), &Env{}, samplerInputs())
	if err != nil || res.Outputs[1] != "p:heun" {
		t.Fatalf("Run = %v, %v", res, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Run(ctx, &Env{}, samplerInputs()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Run = %v", err)
	}
}

// misfit is a typed node whose fields the tests vary through its schema.
type misfit struct {
	schema graph.Schema
	A      any `input:"a"`
}

func (m *misfit) Schema() graph.Schema                      { return m.schema }
func (m *misfit) Run(context.Context, *Env) (Result, error) { return Result{}, nil }

type intField struct {
	misfit
	N int `input:"n"`
}

type uintField struct {
	misfit
	N uint8 `input:"n"`
}

type noTag struct{ misfit }

type viaPointer struct {
	*intField
	misfit
}

type badOption struct {
	misfit
	N int `input:"n,unchecked"`
}

type unexported struct {
	misfit
	n int `input:"n"` //lint:ignore U1000 the test checks that Add refuses it
}

type picField struct {
	misfit
	P pic `input:"p"`
}

func TestTypedAddFails(t *testing.T) {
	anyIn := graph.Input{Name: "a", Type: graph.TypeAny}
	with := func(ins ...graph.Input) misfit {
		return misfit{schema: graph.Schema{Name: "X", Inputs: append([]graph.Input{anyIn}, ins...)}}
	}
	seed := graph.Input{Name: "n", Type: graph.TypeInt, Min: graph.Num(0), Max: graph.Num(uint64(math.MaxUint64))}
	tests := []struct {
		name string
		node Typed
		want string
	}{
		{"tag names no input", &intField{misfit: with()}, `field N is tagged input "n", which the schema does not have`},
		{"input without field", &noTag{with(graph.Input{Name: "n", Type: graph.TypeInt})}, `input "n" has no field`},
		{"seed into int", &intField{misfit: with(seed)}, "int cannot hold the input's maximum 18446744073709551615; use a wider type (uint64 for a seed)"},
		{"negative into uint", &uintField{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt, Min: graph.Num(-1), Max: graph.Num(5)})}, "uint8 cannot hold the input's minimum -1"},
		{"string into INT", &intField{misfit: with(graph.Input{Name: "n", Type: graph.TypeString})}, "int cannot hold a STRING"},
		{"unknown link type", &picField{misfit: with(graph.Input{Name: "p", Type: "LATENT"})}, "type LATENT is not a value type"},
		{"wrong Go type for a link", &picField{misfit: with(graph.Input{Name: "p", Type: "PIC"})}, "nodes.pic cannot hold a PIC, whose values are *nodes.pic"},
		{"hidden input", &intField{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt, Section: graph.Hidden})}, "hidden input"},
		{"unchecked on an INT", &badOption{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt, Min: graph.Num(0), Max: graph.Num(1)})}, `tag option "unchecked" is not "unchecked" on a COMBO input`},
		{"field behind an embedded pointer", &viaPointer{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt})}, "reached through an embedded pointer"},
		{"unexported field", &unexported{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt})}, "not exported"},
		{"default outside bounds", &intField{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt, Default: 0, Min: graph.Num(1), Max: graph.Num(2)})}, "default 0 is outside [1, 2]"},
		{"typed option in Extra", &intField{misfit: with(graph.Input{Name: "n", Type: graph.TypeInt, Min: graph.Num(1), Max: graph.Num(2), Extra: map[string]any{"step": 1}})}, `option "step" belongs in its field`},
		{"unknown output type", &misfit{schema: graph.Schema{Name: "X", Inputs: []graph.Input{anyIn}, Outputs: []graph.Output{{Type: "LATENT"}}}}, `output "": type LATENT is not a value type`},
		{"not a pointer", Typed(nil), "non-nil pointer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry()
			if err := r.AddTypes(Value("PIC", checkPic)); err != nil {
				t.Fatal(err)
			}
			err := r.Add(tc.node)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// loader has the hooks, which see its widget inputs only.
type loader struct {
	Pic  *pic   `input:"pic"`
	File string `input:"file"`
}

func (*loader) Schema() graph.Schema {
	return graph.Schema{Name: "Loader", Inputs: []graph.Input{
		{Name: "pic", Type: "PIC"},
		{Name: "file", Type: graph.TypeCombo, CustomValidation: true, Choices: func() []string { return nil }},
	}}
}

func (*loader) Run(context.Context, *Env) (Result, error) { return Outputs() }
func (l *loader) IsChanged(*Env) (string, error)          { return "hash of " + l.File, nil }
func (l *loader) ValidateInputs(*Env) error {
	if l.Pic != nil {
		return errors.New("a link was decoded for a hook")
	}
	if l.File == "bad" {
		return errors.New("no such file")
	}
	return nil
}

func TestTypedHooks(t *testing.T) {
	r := typedRegistry(t, &loader{}, &sampler{})
	n, _ := r.Lookup("Loader")
	ic, ok := n.(IsChanger)
	iv, ok2 := n.(InputValidator)
	if !ok || !ok2 {
		t.Fatalf("%T has no hooks", n)
	}
	// The file is CustomValidation: any value reaches the hook, none is a combo choice.
	if fp, err := ic.IsChanged(&Env{}, Inputs{"file": "sub/a.png [input]"}); err != nil || fp != "hash of sub/a.png [input]" {
		t.Errorf("IsChanged = %q, %v", fp, err)
	}
	if err := iv.ValidateInputs(&Env{}, Inputs{"file": "bad"}); err == nil || err.Error() != "no such file" {
		t.Errorf("ValidateInputs = %v", err)
	}
	if err := iv.ValidateInputs(&Env{}, Inputs{"file": "ok"}); err != nil {
		t.Errorf("ValidateInputs = %v", err)
	}
	s, _ := r.Lookup("Sampler")
	if _, ok := s.(IsChanger); ok {
		t.Errorf("a node without IsChanged is an IsChanger")
	}
}

// lister takes its inputs as lists (INPUT_IS_LIST).
type lister struct {
	Steps []int  `input:"steps"`
	Pics  []*pic `input:"pics"`
}

func (*lister) Schema() graph.Schema {
	return graph.Schema{Name: "Lister", InputIsList: true, Inputs: []graph.Input{
		{Name: "steps", Type: graph.TypeInt, Min: graph.Num(1), Max: graph.Num(10)},
		{Name: "pics", Type: "PIC"},
	}, Outputs: []graph.Output{{Type: graph.TypeInt, Name: "INT"}}}
}

func (l *lister) Run(context.Context, *Env) (Result, error) {
	return One(len(l.Steps)+len(l.Pics), nil)
}

func TestTypedInputIsList(t *testing.T) {
	r := typedRegistry(t, &lister{})
	n, _ := r.Lookup("Lister")
	res, err := n.Run(context.Background(), &Env{}, Inputs{"steps": []any{int64(1), int64(2)}, "pics": []any{&pic{w: 1}}})
	if err != nil || res.Outputs[0] != 3 {
		t.Fatalf("Run = %v, %v", res, err)
	}
	_, err = n.Run(context.Background(), &Env{}, Inputs{"steps": []any{int64(1), int64(11)}, "pics": []any{}})
	if err == nil || !strings.Contains(err.Error(), `input "steps": 11 is outside [1, 10]`) {
		t.Fatalf("err = %v", err)
	}
}

// fileLoader takes a combo of files it resolves itself (`,unchecked`).
type fileLoader struct {
	Name string `input:"name,unchecked"`
	Kind string `input:"kind"`
}

func (*fileLoader) Schema() graph.Schema {
	list := func() []string { return []string{"a.safetensors"} }
	return graph.Schema{Name: "FileLoader", Inputs: []graph.Input{
		{Name: "name", Type: graph.TypeCombo, Choices: list}, {Name: "kind", Type: graph.TypeCombo, Choices: list}}}
}

func (f *fileLoader) Run(context.Context, *Env) (Result, error) { return Outputs() }

func TestTypedUncheckedCombo(t *testing.T) {
	r := typedRegistry(t, &fileLoader{})
	n, _ := r.Lookup("FileLoader")
	if _, err := n.Run(context.Background(), &Env{}, Inputs{"name": "absent.safetensors", "kind": "a.safetensors"}); err != nil {
		t.Fatalf("an unchecked combo's value was checked: %v", err)
	}
	if _, err := n.Run(context.Background(), &Env{}, Inputs{"name": "a.safetensors", "kind": "absent.safetensors"}); err == nil {
		t.Fatal("a checked combo took a value not in its list")
	}
}

// liar returns a value of the wrong Go type for its output.
type liar struct{}

func (*liar) Schema() graph.Schema {
	return graph.Schema{Name: "Liar", Outputs: []graph.Output{{Type: "PIC", Name: "PIC"}}}
}
func (*liar) Run(context.Context, *Env) (Result, error) { return One("not a picture", nil) }

func TestTypedChecksOutputs(t *testing.T) {
	r := typedRegistry(t, &liar{})
	n, _ := r.Lookup("Liar")
	if _, err := n.Run(context.Background(), &Env{}, Inputs{}); err == nil || !strings.Contains(err.Error(), "returned string for output 0 (PIC), want *nodes.pic") {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkTypedRun measures what a typed node costs per run beyond its own work:
// copying the registered value and decoding and checking ten inputs.
func BenchmarkTypedRun(b *testing.B) {
	r := NewRegistry()
	if err := r.AddTypes(Value("PIC", checkPic)); err != nil {
		b.Fatal(err)
	}
	if err := r.Add(&sampler{}); err != nil {
		b.Fatal(err)
	}
	n, _ := r.Lookup("Sampler")
	in := samplerInputs()
	in["denoise"] = 0.5
	ctx, env := context.Background(), &Env{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Run(ctx, env, in); err != nil {
			b.Fatal(err)
		}
	}
}

// camera takes a socket-typed input whose value is written in the prompt and checked by
// the node (WebcamCapture's WEBCAM file name).
type camera struct {
	Pic  *pic   `input:"pic"`
	Shot string `input:"shot"`
}

func (*camera) Schema() graph.Schema {
	return graph.Schema{Name: "Camera", Inputs: []graph.Input{
		{Name: "pic", Type: "PIC"},
		{Name: "shot", Type: "SHOT", CustomValidation: true},
	}}
}

func (*camera) Run(context.Context, *Env) (Result, error) { return Outputs() }
func (c *camera) ValidateInputs(*Env) error {
	if c.Pic != nil {
		return errors.New("a link was decoded for a hook")
	}
	if c.Shot != "shot.png" {
		return fmt.Errorf("shot %q", c.Shot)
	}
	return nil
}

// TestTypedHooksGetCustomValidationLiterals checks that a CustomValidation input of a
// socket type reaches the hooks as the literal the prompt holds; other links do not.
func TestTypedHooksGetCustomValidationLiterals(t *testing.T) {
	r := NewRegistry()
	if err := r.AddTypes(Value("PIC", checkPic), Value[string]("SHOT", nil)); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(&camera{}); err != nil {
		t.Fatal(err)
	}
	n, _ := r.Lookup("Camera")
	if err := n.(InputValidator).ValidateInputs(&Env{}, Inputs{"shot": "shot.png", "pic": &pic{w: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := n.(InputValidator).ValidateInputs(&Env{}, Inputs{"shot": 5}); err == nil {
		t.Fatal("a number reached a string input")
	}
}
