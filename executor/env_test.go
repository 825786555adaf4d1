package executor_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// probe records the environment and inputs of its run.
type probe struct {
	mu  sync.Mutex
	env nodes.Env
	in  nodes.Inputs
}

func (p *probe) Schema() *graph.Schema {
	return &graph.Schema{Name: "Probe", OutputNode: true, Inputs: []graph.Input{
		{Name: "seed", Type: graph.TypeInt},
		{Name: "cfg", Type: graph.TypeFloat},
		{Name: "text", Type: graph.TypeString},
		{Name: "flag", Type: graph.TypeBoolean, Section: graph.Optional},
		{Name: "absent", Type: graph.TypeInt, Section: graph.Optional},
		{Name: "prompt", Type: "PROMPT", Section: graph.Hidden},
		{Name: "extra_pnginfo", Type: "EXTRA_PNGINFO", Section: graph.Hidden},
		{Name: "unique_id", Type: "UNIQUE_ID", Section: graph.Hidden},
		{Name: "api_key", Type: "API_KEY_COMFY_ORG", Section: graph.Hidden},
	}}
}

func (p *probe) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.env, p.in = *env, in
	return nodes.Result{}, nil
}

func TestNodeEnvAndInputs(t *testing.T) {
	reg := nodes.NewRegistry()
	pr := &probe{}
	if err := reg.Register(pr); err != nil {
		t.Fatal(err)
	}
	dirs := nodes.Dirs{Output: "/out", Input: "/in", Temp: "/tmp/x"}
	e, err := executor.New(executor.Options{Registry: reg, Dirs: dirs, DisableMetadata: true})
	if err != nil {
		t.Fatal(err)
	}
	prompt := graph.Prompt{"7": node("Probe", map[string]any{
		"seed": json.Number("18446744073709551615"), "cfg": json.Number("8"), "text": "a cat",
		"flag": true, "unknown": "ignored"})}
	workflow := map[string]any{"workflow": map[string]any{"nodes": []any{}}}
	entry := e.Execute(context.Background(), &executor.Job{ID: "p", Prompt: prompt,
		ExtraData: map[string]any{"extra_pnginfo": workflow},
		Sensitive: map[string]any{"api_key_comfy_org": "k"}})
	if entry.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("status %+v", entry.Status)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.env.Dirs != dirs || !pr.env.DisableMetadata || pr.env.NodeID != "7" || pr.env.PromptID != "p" ||
		pr.env.Logger == nil || pr.env.Progress == nil || pr.env.Preview == nil || pr.env.Prompt == nil ||
		pr.env.ExtraPNGInfo["workflow"] == nil {
		t.Errorf("env = %+v", pr.env)
	}
	// Seeds above 2^63-1 arrive as uint64.
	if s, err := pr.in.Uint("seed"); err != nil || s != 18446744073709551615 {
		t.Errorf("seed = %v, %v", s, err)
	}
	if c, err := pr.in.Float("cfg"); err != nil || c != 8 {
		t.Errorf("cfg = %v (%T), %v", pr.in["cfg"], pr.in["cfg"], err)
	}
	if _, ok := pr.in["cfg"].(float64); !ok {
		t.Errorf("FLOAT input is %T, want float64", pr.in["cfg"])
	}
	if pr.in["text"] != "a cat" || pr.in["flag"] != true || pr.in["unique_id"] != "7" || pr.in["api_key"] != "k" {
		t.Errorf("inputs = %v", pr.in)
	}
	if pr.in.Has("absent") || pr.in.Has("unknown") {
		t.Errorf("absent optional or unknown input passed: %v", pr.in)
	}
	if _, ok := pr.in["prompt"].(graph.Prompt); !ok {
		t.Errorf("PROMPT is %T", pr.in["prompt"])
	}
	if pr.in["extra_pnginfo"].(map[string]any)["workflow"] == nil {
		t.Errorf("EXTRA_PNGINFO = %v", pr.in["extra_pnginfo"])
	}
	// The sensitive key never reaches the history.
	b, _ := json.Marshal(entry)
	if strings.Contains(string(b), `"k"`) {
		t.Errorf("history leaks the api key: %s", b)
	}
}
