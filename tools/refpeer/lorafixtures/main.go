// Command lorafixtures prepares and digests the LoRA reference runs against ComfyUI
// (see codex/refpeer.md, "LoRA").
//
//	go run ./tools/refpeer/lorafixtures -out DIR
//
// writes, for every case of loratest.RefCases, the tiny checkpoint and LoRA files into
// DIR and lists them in DIR/cases.json; tools/refpeer/lora_apply.py then applies them
// with ComfyUI's own code inside the reference peer and writes DIR/comfy_<case>.
// safetensors (the patched weights) and DIR/keymap_<case>.json (ComfyUI's key map).
//
//	go run ./tools/refpeer/lorafixtures -expect DIR > diffusion/lora/testdata/comfyui_lora.json
//
// digests those outputs into the small expected-value fixture the tests compare with:
// per patched weight its element count, sum, sum of squares and a few sampled values,
// per case the size and sha256 of ComfyUI's key map.
//
//	go run ./tools/refpeer/lorafixtures -image OUT -ckpt sd15_random_fp16.safetensors
//
// writes the LoRA of the image comparison (a kohya LoRA of rank 8 on every transformer
// layer of the SD1.5 UNet and every CLIP layer, a LoHa on the first level's resnets,
// small enough to change the picture without wrecking it) for that checkpoint.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

func main() {
	out := flag.String("out", "", "write the cases' checkpoints and LoRA files into this folder")
	expect := flag.String("expect", "", "digest ComfyUI's outputs in this folder into the test fixture (stdout)")
	image := flag.String("image", "", "write the image comparison's LoRA to this file (with -ckpt)")
	ckpt := flag.String("ckpt", "", "the full-size SD1.5 checkpoint the -image LoRA is for")
	flag.Parse()
	var err error
	switch {
	case *out != "":
		err = write(*out)
	case *expect != "":
		err = digest(*expect)
	case *image != "" && *ckpt != "":
		err = imageLoRA(*ckpt, *image)
	default:
		err = errors.New("give -out DIR, -expect DIR or -image FILE -ckpt FILE")
	}
	if err != nil {
		log.Fatal(err)
	}
}

// caseFile is one entry of cases.json.
type caseFile struct {
	Name       string     `json:"name"`
	Family     string     `json:"family"`
	Checkpoint string     `json:"checkpoint"`
	LoRAs      []loraFile `json:"loras"`
}

type loraFile struct {
	File          string  `json:"file"`
	StrengthModel float64 `json:"strength_model"`
	StrengthCLIP  float64 `json:"strength_clip"`
}

func write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		return err
	}
	var cases []caseFile
	for _, c := range loratest.RefCases() {
		ckpt, loras, err := loratest.WriteCase(rt, c, dir)
		if err != nil {
			return err
		}
		cf := caseFile{Name: c.Name, Family: string(c.Family), Checkpoint: filepath.Base(ckpt)}
		for i, l := range loras {
			cf.LoRAs = append(cf.LoRAs, loraFile{File: filepath.Base(l), StrengthModel: c.LoRAs[i].StrengthModel, StrengthCLIP: c.LoRAs[i].StrengthCLIP})
		}
		cases = append(cases, cf)
	}
	data, err := json.MarshalIndent(cases, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cases.json"), append(data, '\n'), 0o644)
}

func digest(dir string) error {
	var cases []caseFile
	data, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		return err
	}
	exp := loratest.Expected{Comment: "ComfyUI 0.3.64's LoRA results for loratest.RefCases, made by tools/refpeer (see codex/refpeer.md)",
		Cases: map[string]loratest.ExpectedCase{}}
	for _, c := range cases {
		var entries [][4]any
		km, err := os.ReadFile(filepath.Join(dir, "keymap_"+c.Name+".json"))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(km, &entries); err != nil {
			return err
		}
		lines := make([]string, len(entries))
		for i, e := range entries {
			lines[i] = fmt.Sprintf("%v\t%v\t%v\t%v\n", e[0], e[1], e[2], e[3])
		}
		ec := loratest.ExpectedCase{KeyMap: loratest.KeyMapDigest{Entries: len(lines), SHA256: loratest.DigestLines(lines)}, Weights: map[string]loratest.WeightStats{}}
		f, err := tensorfile.Open(filepath.Join(dir, "comfy_"+c.Name+".safetensors"))
		if err != nil {
			return err
		}
		for _, in := range f.Tensors() {
			t, err := f.Tensor(in.Name)
			if err != nil {
				return err
			}
			v, err := t.Float32()
			if err != nil {
				return err
			}
			ec.Weights[in.Name] = loratest.Stats(v)
		}
		f.Close()
		exp.Cases[c.Name] = ec
	}
	out, err := json.MarshalIndent(exp, "", " ")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

// imageLoRA writes the image comparison's LoRA for the checkpoint at ckpt.
func imageLoRA(ckpt, out string) error {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		return err
	}
	ck, err := sd.LoadCheckpoint(rt, ckpt, sd.LoadOptions{SkipVAE: true})
	if err != nil {
		return err
	}
	defer ck.Close()
	km, err := sd.LoRAKeyMap(ck.Model, ck.CLIP)
	if err != nil {
		return err
	}
	mp, tp, err := sd.LoRAParams(ck.Model, ck.CLIP)
	if err != nil {
		return err
	}
	shapes := map[string][]int{}
	for _, p := range append(mp, tp...) {
		shapes[p.Key] = p.Shape
	}
	f := loratest.New(2026).DType(weights.F16)
	mods := make([]string, 0, len(km))
	for mod := range km {
		mods = append(mods, mod)
	}
	sort.Strings(mods)
	for _, mod := range mods {
		s := shapes[km[mod].Key]
		switch {
		case len(s) < 2 || strings.Contains(mod, "norm"):
		case strings.HasPrefix(mod, "lora_unet_down_blocks_0_resnets_") && strings.HasSuffix(mod, "conv1"):
			f.LoHa(mod, s[0], s[1], s[2], 4, 0.02)
		case strings.HasPrefix(mod, "lora_unet_") && strings.Contains(mod, "_attentions_") &&
			(strings.Contains(mod, "transformer_blocks") || strings.HasSuffix(mod, "proj_in") || strings.HasSuffix(mod, "proj_out")),
			strings.HasPrefix(mod, "lora_te_"):
			// alpha 0.02 of rank 8: ΔW ≈ 0.7·0.0025, about a tenth of the weights' spread
			f.LoRA(mod, loratest.Kohya, s[0], 8, 0.02, s[1:]...)
		}
	}
	return writeOut(out, f)
}

func writeOut(path string, f *loratest.File) error {
	data, err := f.Bytes()
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
