// Command mergefixtures prepares the model-merging reference run against ComfyUI (see
// codex/refpeer.md, "Model merging").
//
//	go run ./tools/refpeer/mergefixtures -out DIR
//
// writes two tiny random SD1.5 checkpoints (F16, seeds 1 and 2) as DIR/a.safetensors and
// DIR/b.safetensors and two SDXL ones as DIR/xl_a/xl_b.safetensors, runs forgeflow's merge nodes on them for every case of cases and
// saves each result with sd.SaveCheckpoint as DIR/ff_<case>.safetensors.
// tools/refpeer/merge_check.py then runs ComfyUI 0.3.64's own merge nodes and
// calculate_weight on the same files inside the reference peer, checks that ComfyUI's
// model detection takes forgeflow's files, and compares every tensor.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/nodes/builtin"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// mergeCase is one model merge node and one CLIP merge node with their widget values,
// on the two checkpoints of a family ("sd1": a/b.safetensors, "sdxl": xl_a/xl_b).
type mergeCase struct {
	Name        string             `json:"name"`
	Family      string             `json:"family"`
	Model       string             `json:"model"`
	ModelInputs map[string]float64 `json:"model_inputs"`
	CLIP        string             `json:"clip"`
	CLIPInputs  map[string]float64 `json:"clip_inputs"`
}

var cases = []mergeCase{
	{Name: "blocks", Family: "sd1", Model: "ModelMergeBlocks", ModelInputs: map[string]float64{"input": 0.3, "middle": 0.5, "out": 0.7},
		CLIP: "CLIPMergeSimple", CLIPInputs: map[string]float64{"ratio": 0.25}},
	{Name: "subtract", Family: "sd1", Model: "ModelMergeSubtract", ModelInputs: map[string]float64{"multiplier": 1.5},
		CLIP: "CLIPMergeSubtract", CLIPInputs: map[string]float64{"multiplier": 0.5}},
	{Name: "add", Family: "sd1", Model: "ModelMergeAdd", ModelInputs: map[string]float64{},
		CLIP: "CLIPMergeAdd", CLIPInputs: map[string]float64{}},
	{Name: "sd1", Family: "sd1", Model: "ModelMergeSD1", ModelInputs: map[string]float64{"time_embed.": 0.1, "label_emb.": 0.2,
		"input_blocks.1.": 0.9, "middle_block.1.": 0.4, "output_blocks.10.": 0.6, "output_blocks.1.": 0.8, "out.": 0.05},
		CLIP: "CLIPMergeSimple", CLIPInputs: map[string]float64{"ratio": 1}},
	// SDXL: CLIP-G is stored in OpenCLIP's layout (fused in_proj), written back as such.
	{Name: "sdxl", Family: "sdxl", Model: "ModelMergeSDXL", ModelInputs: map[string]float64{"time_embed.": 0.2,
		"input_blocks.1": 0.7, "middle_block.1": 0.35, "output_blocks.2": 0.9, "out.": 0.5},
		CLIP: "CLIPMergeSimple", CLIPInputs: map[string]float64{"ratio": 0.6}},
}

func main() {
	out := flag.String("out", "", "folder for the checkpoints and forgeflow's merges")
	flag.Parse()
	if *out == "" {
		log.Fatal("give -out DIR")
	}
	if err := run(*out); err != nil {
		log.Fatal(err)
	}
}

func run(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		return err
	}
	cks := map[string]*sd.Checkpoint{}
	for i, name := range []string{"a.safetensors", "b.safetensors", "xl_a.safetensors", "xl_b.safetensors"} {
		spec := sd.TinyRandomSpec(detect.FamilySD1)
		if i >= 2 {
			spec = sd.TinyRandomSpec(detect.FamilySDXL)
		}
		spec.Seed = uint64(i%2 + 1)
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := sd.WriteRandomCheckpoint(f, spec); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{})
		if err != nil {
			return err
		}
		defer ck.Close()
		cks[name] = ck
	}
	r := nodes.NewRegistry()
	if err := builtin.Register(r, builtin.Options{}); err != nil {
		return err
	}
	call := func(class string, in nodes.Inputs) (any, error) {
		n, err := r.Lookup(class)
		if err != nil {
			return nil, err
		}
		res, err := n.Run(context.Background(), &nodes.Env{}, in)
		if err != nil {
			return nil, err
		}
		return res.Outputs[0], nil
	}
	for _, c := range cases {
		a, b := cks["a.safetensors"], cks["b.safetensors"]
		if c.Family == "sdxl" {
			a, b = cks["xl_a.safetensors"], cks["xl_b.safetensors"]
		}
		// ModelMergeSD1 takes every block ratio; the ones the case does not name are 1.
		in := nodes.Inputs{"model1": a.Model, "model2": b.Model}
		if s, ok := r.Schema(c.Model); ok {
			for _, x := range s.Inputs[2:] {
				in[x.Name] = 1.0
			}
		}
		for k, v := range c.ModelInputs {
			in[k] = v
		}
		m, err := call(c.Model, in)
		if err != nil {
			return err
		}
		cin := nodes.Inputs{"clip1": a.CLIP, "clip2": b.CLIP}
		for k, v := range c.CLIPInputs {
			cin[k] = v
		}
		cl, err := call(c.CLIP, cin)
		if err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(dir, "ff_"+c.Name+".safetensors"))
		if err != nil {
			return err
		}
		if err := sd.SaveCheckpoint(f, m.(*sd.Model), cl.(*sd.CLIP), a.VAE, c.Name, nil); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	js, err := json.MarshalIndent(cases, "", " ")
	if err != nil {
		return err
	}
	fmt.Println(filepath.Join(dir, "cases.json"))
	return os.WriteFile(filepath.Join(dir, "cases.json"), js, 0o644)
}
