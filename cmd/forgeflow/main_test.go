package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/cmd/forgeflow/internal/batch"
	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// runCLI runs the program in-process with its output captured.
func runCLI(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

const workflowsDir = "../../workflows"

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"run"}, exitUsage},
		{[]string{"validate"}, exitUsage},
		{[]string{"convert"}, exitUsage},
		{[]string{"run", "--no-such-flag", "x"}, exitUsage},
		{[]string{"run", "/no/such/file.json"}, exitUsage},
		{[]string{"serve", "extra"}, exitUsage},
		{[]string{"run", "--cache-none", "--cache-lru", "3", workflowsDir}, exitUsage},
	} {
		code, _, _ := runCLI(t, context.Background(), tc.args...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}

func writeText(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodPrompt = `{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
	"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}}}`

func TestRunFailures(t *testing.T) {
	base := t.TempDir()
	dir := t.TempDir()
	bad := writeText(t, filepath.Join(dir, "a_bad.json"), `{"1": {"class_type": "NoSuchNode", "inputs": {}}}`)
	broken := writeText(t, filepath.Join(dir, "b_broken.json"), `{"1": `)
	good := writeText(t, filepath.Join(dir, "c_good.json"), goodPrompt)

	code, out, _ := runCLI(t, context.Background(), "run", "--base-directory", base, bad, broken, good)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d", code, exitFailed)
	}
	if !strings.Contains(out, "NoSuchNode does not exist") || strings.Count(out, "skipped") != 2 {
		t.Fatalf("without --continue-on-error the rest must be skipped:\n%s", out)
	}
	code, out, _ = runCLI(t, context.Background(), "run", "--continue-on-error", "--base-directory", base, dir)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d", code, exitFailed)
	}
	if !strings.Contains(out, "1 of 3 workflows succeeded") || strings.Contains(out, "skipped") {
		t.Fatalf("--continue-on-error must run every file:\n%s", out)
	}
}

func TestRunJSON(t *testing.T) {
	dir := t.TempDir()
	good := writeText(t, filepath.Join(dir, "good.json"), goodPrompt)
	bad := writeText(t, filepath.Join(dir, "bad.json"), `{"1": {"class_type": "NoSuchNode", "inputs": {}}}`)
	code, out, errOut := runCLI(t, context.Background(), "run", "--json", "--continue-on-error", "--base-directory", t.TempDir(), good, bad)
	if code != exitFailed {
		t.Fatalf("exit %d", code)
	}
	var rep struct {
		OutputDirectory string            `json:"output_directory"`
		Workflows       []batch.RunReport `json:"workflows"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, out)
	}
	if len(rep.Workflows) != 2 || rep.Workflows[0].Status != "ok" || len(rep.Workflows[0].Images) != 1 || rep.Workflows[1].Status != "invalid" || rep.Workflows[1].Detail == "" {
		t.Fatalf("summary %+v", rep)
	}
	if !strings.Contains(errOut, "good.json") {
		t.Fatalf("progress did not go to stderr: %q", errOut)
	}
}

func TestRunInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	good := writeText(t, filepath.Join(dir, "good.json"), goodPrompt)
	code, out, _ := runCLI(t, ctx, "run", "--base-directory", t.TempDir(), good, good)
	if code != exitFailed || !strings.Contains(out, "interrupted") || !strings.Contains(out, "skipped") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	bad := writeText(t, filepath.Join(dir, "bad.json"), `{"1": {"class_type": "NoSuchNode", "inputs": {}}}`)
	good := filepath.Join(workflowsDir, "blend_ui.json")
	code, out, _ := runCLI(t, context.Background(), "validate", good)
	if code != exitOK || !strings.HasPrefix(out, "ok ") {
		t.Fatalf("exit %d: %s", code, out)
	}
	code, out, _ = runCLI(t, context.Background(), "validate", "--json", good, bad)
	if code != exitFailed {
		t.Fatalf("exit %d, want failure", code)
	}
	var rep map[string]struct {
		Valid      bool           `json:"valid"`
		Outputs    []string       `json:"outputs"`
		Error      map[string]any `json:"error"`
		NodeErrors map[string]any `json:"node_errors"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if r := rep[good]; !r.Valid || len(r.Outputs) != 1 || r.Outputs[0] != "4" || r.Error != nil {
		t.Errorf("good: %+v", r)
	}
	r := rep[bad]
	if r.Valid || r.Error["type"] != "invalid_prompt" || r.Error["message"] != "Cannot execute because node NoSuchNode does not exist." || r.NodeErrors == nil {
		t.Errorf("bad: %+v", r)
	}
	for _, k := range []string{"type", "message", "details", "extra_info"} {
		if _, ok := r.Error[k]; !ok {
			t.Errorf("error lacks ComfyUI's %q", k)
		}
	}
}

func TestNodesCommand(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), "nodes", "--json")
	if code != exitOK {
		t.Fatal(code)
	}
	var info map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info["SaveImage"]["output_node"] != true || info["SaveImage"]["name"] != "SaveImage" {
		t.Fatalf("SaveImage entry: %v", info["SaveImage"])
	}
	code, out, _ = runCLI(t, context.Background(), "nodes")
	if code != exitOK || !strings.Contains(out, "SaveImage") || !strings.Contains(out, "CATEGORY") {
		t.Fatalf("table: %s", out)
	}

	code, out, _ = runCLI(t, context.Background(), "nodes", "--coverage", "--json")
	if code != exitOK {
		t.Fatal(code)
	}
	var cov coverage
	if err := json.Unmarshal([]byte(out), &cov); err != nil {
		t.Fatal(err)
	}
	if cov.Total != len(comfyUIClasses()) || len(cov.Implemented)+len(cov.Missing) != cov.Total {
		t.Fatalf("coverage totals %d = %d + %d", cov.Total, len(cov.Implemented), len(cov.Missing))
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	if !has(cov.Implemented, "SaveImage") || !has(cov.Missing, "KSamplerAdvanced") && !has(cov.Implemented, "KSamplerAdvanced") {
		t.Fatalf("coverage lists: %+v", cov)
	}
	// The ControlNet and inpainting family of issue 11, Canny from ComfyUI's source.
	for _, n := range []string{"ControlNetLoader", "DiffControlNetLoader", "ControlNetApply", "ControlNetApplyAdvanced", "ControlNetApplySD3",
		"SetUnionControlNetType", "VAEEncodeForInpaint", "SetLatentNoiseMask", "InpaintModelConditioning",
		"ImagePadForOutpaint", "DifferentialDiffusion", "Canny"} {
		if !has(cov.Implemented, n) {
			t.Errorf("coverage does not list %s as implemented", n)
		}
	}
	code, out, _ = runCLI(t, context.Background(), "nodes", "--coverage")
	if code != exitOK || !strings.Contains(out, "nodes implemented:") {
		t.Fatalf("coverage text: %s", out)
	}
}

func TestConvert(t *testing.T) {
	code, out, errOut := runCLI(t, context.Background(), "convert", filepath.Join(workflowsDir, "blend_ui.json"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var p map[string]struct {
		ClassType string         `json:"class_type"`
		Inputs    map[string]any `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(p) != 4 || p["3"].ClassType != "ImageBlend" || p["3"].Inputs["blend_mode"] != "normal" || p["3"].Inputs["blend_factor"] != 0.5 {
		t.Fatalf("prompt %s", out)
	}
	if l, ok := p["3"].Inputs["image2"].([]any); !ok || l[0] != "2" || l[1] != float64(0) {
		t.Fatalf("link image2 = %v", p["3"].Inputs["image2"])
	}
	if p["1"].Inputs["color"] != float64(16711680) || p["4"].Inputs["filename_prefix"] != "examples/blend" {
		t.Fatalf("widgets: %s", out)
	}
	bad := writeText(t, filepath.Join(t.TempDir(), "x.json"), `[1, 2]`)
	if code, _, _ := runCLI(t, context.Background(), "convert", bad); code != exitFailed {
		t.Fatalf("bad file: exit %d", code)
	}
}

func TestListenNetwork(t *testing.T) {
	for host, want := range map[string]string{"127.0.0.1": "tcp4", "0.0.0.0": "tcp4", "::": "tcp6", "::1": "tcp6", "localhost": "tcp"} {
		if got := listenNetwork(host); got != want {
			t.Errorf("listenNetwork(%q) = %s, want %s", host, got, want)
		}
	}
}

func TestCacheOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     config
		mode    executor.CacheMode
		lru     int
		minFree uint64
		err     bool
	}{
		{name: "default classic", cfg: config{cacheMinFreeMB: 1024}, mode: executor.CacheClassic, minFree: 1 << 30},
		{name: "classic", cfg: config{cacheClassic: true}, mode: executor.CacheClassic},
		{name: "lru", cfg: config{cacheLRU: 5, cacheMinFreeMB: 10}, mode: executor.CacheLRU, lru: 5, minFree: 10 << 20},
		{name: "none", cfg: config{cacheNone: true, cacheMinFreeMB: 10}, mode: executor.CacheNone},
		{name: "exclusive", cfg: config{cacheNone: true, cacheClassic: true}, err: true},
		{name: "negative", cfg: config{cacheLRU: -1}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.cfg.cacheOptions(memory.New(memory.Options{}))
			if tc.err {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil || o.Mode != tc.mode || o.LRUSize != tc.lru || o.MinFreeRAM != tc.minFree || (tc.minFree > 0) != (o.AvailableRAM != nil) {
				t.Fatalf("%+v, %v", o, err)
			}
		})
	}
}

func TestServeBadFrontEndRoot(t *testing.T) {
	var errb bytes.Buffer
	code := serve(context.Background(), []string{"--base-directory", t.TempDir(), "--port", "0", "--front-end-root", t.TempDir()}, io.Discard, &errb, nil)
	if code != exitFailed || !strings.Contains(errb.String(), "index.html") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

// TestUIFormsMatchAPI: a workflow kept in both forms converts to the same prompt.
func TestUIFormsMatchAPI(t *testing.T) {
	code, out, errOut := runCLI(t, context.Background(), "convert", filepath.Join(workflowsDir, "invert_ui.json"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want, err := os.ReadFile(filepath.Join(workflowsDir, "invert_api.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got, exp any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &exp); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("invert_ui.json converts to\n%s\nwant invert_api.json\n%s", out, want)
	}
}

func TestModelsCommand(t *testing.T) {
	base := t.TempDir()
	lora := filepath.Join(base, "models", "loras", "style", "a.safetensors")
	os.MkdirAll(filepath.Dir(lora), 0o755)
	os.WriteFile(lora, []byte("x"), 0o644)
	code, out, _ := runCLI(t, context.Background(), "models", "--base-directory", base)
	if code != exitOK || !strings.Contains(out, "checkpoints") || !strings.Contains(out, "loras") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, context.Background(), "models", "--base-directory", base, "loras")
	if code != exitOK || out != "style/a.safetensors\n" {
		t.Fatalf("exit %d: %q", code, out)
	}
	code, out, _ = runCLI(t, context.Background(), "models", "--json", "--base-directory", base, "loras")
	var m modelFolder
	if code != exitOK || json.Unmarshal([]byte(out), &m) != nil || m.Name != "loras" || len(m.Files) != 1 || len(m.Dirs) == 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if code, _, errOut := runCLI(t, context.Background(), "models", "--base-directory", base, "nonsense"); code != exitFailed || !strings.Contains(errOut, "unknown model folder") {
		t.Fatalf("unknown folder: exit %d %s", code, errOut)
	}
}
