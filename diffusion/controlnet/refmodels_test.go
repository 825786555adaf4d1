package controlnet

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/weights"
)

// The tiny models of the reference runs against ComfyUI (tools/refpeer/controlnet_ref.py).
// They are written by the tests from fixed specs and seeds: the reference's metadata
// records each file's sha256, so a changed generator fails loudly instead of comparing
// against other weights.

var (
	refModelsDir = flag.String("controlnet.models", "", "write the reference runs' model files to this folder (for tools/refpeer/controlnet_ref.py)")
	refSD15      = flag.String("controlnet.sd15", "", "write a full-size random SD1.5 ControlNet (F16) to this file (for tools/refpeer/workflows/sd15_controlnet_256.json)")
)

// refUNet is the UNet of the sampling runs: SD1.5's layout (four levels, two blocks
// each, twelve input blocks) at 32 channels, attention where a 64-wide head fits.
var refUNet = sd.RandomUNet{ModelChannels: 32, Mult: []int{1, 2, 4, 4}, ResBlocks: 2, Depth: []int{0, 1, 0, 0}, MidDepth: 1, Context: 32}

// refUnionUNet is the trunk of the union ControlNet: union's parts are 320 wide, so
// is its trunk; one level keeps it small.
var refUnionUNet = sd.RandomUNet{ModelChannels: 320, Mult: []int{1}, ResBlocks: 1, Depth: []int{0}, MidDepth: 1, Context: 32}

type refModel struct {
	file    string
	seed    uint64
	tensors func() []sd.RandomTensor
}

func refModels() []refModel {
	inpaint := refUNet
	inpaint.InChannels = 9
	return []refModel{
		{"unet.safetensors", 11, func() []sd.RandomTensor { return sd.RandomUNetTensors("model.diffusion_model.", refUNet) }},
		{"unet_inpaint.safetensors", 12, func() []sd.RandomTensor { return sd.RandomUNetTensors("model.diffusion_model.", inpaint) }},
		{"controlnet.safetensors", 13, func() []sd.RandomTensor { return RandomControlNet("", refUNet, 3, 0) }},
		{"control_lora.safetensors", 14, func() []sd.RandomTensor { return RandomControlLoRA(refUNet, 3, 4) }},
		{"controlnet_diff.safetensors", 15, func() []sd.RandomTensor { return RandomDiffControlNet(refUNet, 3) }},
		{"t2i_full.safetensors", 16, func() []sd.RandomTensor { return RandomAdapter(32, 2, 3, 3, false, false) }},
		{"t2i_full_conv1.safetensors", 17, func() []sd.RandomTensor { return RandomAdapter(32, 2, 1, 1, true, false) }},
		{"t2i_xl.safetensors", 18, func() []sd.RandomTensor { return RandomAdapter(32, 2, 1, 3, false, true) }},
		{"t2i_light.safetensors", 19, func() []sd.RandomTensor { return RandomLightAdapter([]int{32, 64, 128, 128}, 2, 3) }},
		{"union.safetensors", 20, func() []sd.RandomTensor { return RandomControlNet("", refUnionUNet, 3, 8) }},
		{"unet_lora.safetensors", 22, func() []sd.RandomTensor { return refUNetLoRA(refUNet, 4) }},
	}
}

// refUNetLoRA lists a kohya LoRA (rank rank, no alpha) on every conv and linear weight
// of a UNet of spec u, under the names ComfyUI maps from the ldm keys
// ("lora_unet_input_blocks_1_0_in_layers_2"): the model LoRA the control-lora of
// control_lora_on_lora is built on.
func refUNetLoRA(u sd.RandomUNet, rank int) []sd.RandomTensor {
	var l randomList
	for _, t := range sd.RandomUNetTensors("", u) {
		layer, ok := strings.CutSuffix(t.Name, ".weight")
		if !ok || len(t.Shape) < 2 {
			continue
		}
		module := "lora_unet_" + strings.ReplaceAll(layer, ".", "_")
		up := []int{t.Shape[0], rank}
		in := 1
		for _, d := range t.Shape[1:] {
			in *= d
		}
		if len(t.Shape) == 4 {
			up = append(up, 1, 1)
		}
		l.add(module+".lora_up.weight", 0.05, 0, up...)
		l.add(module+".lora_down.weight", 1/math.Sqrt(float64(in)), 0, append([]int{rank}, t.Shape[1:]...)...)
	}
	return l
}

// writeRefModel writes m (F16, as released files store weights) under dir and returns
// its path and sha256.
func writeRefModel(t testing.TB, dir string, m refModel) (string, string) {
	t.Helper()
	p := filepath.Join(dir, m.file)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := sd.WriteRandomTensors(io.MultiWriter(f, h), m.tensors(), m.seed, weights.F16); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// TestWriteRefModels writes the reference runs' models where -controlnet.models says.
func TestWriteRefModels(t *testing.T) {
	if *refModelsDir == "" {
		t.Skip("-controlnet.models not set")
	}
	if err := os.MkdirAll(*refModelsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range refModels() {
		p, sum := writeRefModel(t, *refModelsDir, m)
		t.Logf("%s %s", sum, p)
	}
}

// TestWriteSD15ControlNet writes a full-size SD1.5 ControlNet with random weights
// where -controlnet.sd15 says: the cldm layout of control_v11p_sd15_*.pth, 361 M
// parameters, for the side-by-side image run with ComfyUI's server.
func TestWriteSD15ControlNet(t *testing.T) {
	if *refSD15 == "" {
		t.Skip("-controlnet.sd15 not set")
	}
	f, err := os.Create(*refSD15)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := sd.WriteRandomTensors(io.MultiWriter(f, h), RandomControlNet("", sd.SD15RandomSpec().UNet, 3, 0), 21, weights.F16); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s", hex.EncodeToString(h.Sum(nil)), *refSD15)
}
