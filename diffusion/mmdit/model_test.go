package mmdit_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// edited writes spec's tensors after edit changed the list.
func edited(t *testing.T, spec mmdit.RandomSpec, edit func([]sd.RandomTensor) []sd.RandomTensor) []byte {
	t.Helper()
	ts, err := spec.Tensors("")
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]sd.RandomTensor, len(ts))
	for i, x := range ts {
		rs[i] = sd.RandomTensor{Name: x.Name, Shape: x.Shape, Scale: x.Scale, Offset: x.Offset}
	}
	var buf bytes.Buffer
	if err := sd.WriteRandomTensors(&buf, edit(rs), 3, weights.F32); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func load(t *testing.T, rt *gpu.Runtime, data []byte) (*mmdit.Model, error) {
	t.Helper()
	f, err := tensorfile.OpenBytes("m.safetensors", data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, _, err := mmdit.Load(rt, statedict.NewFileSource(rt, f), "")
	return m, err
}

// TestLoadConfig reads SD3.5 medium's layout off the shapes and refuses files that are
// not an SD3 MMDiT, naming what is wrong.
func TestLoadConfig(t *testing.T) {
	rt, _ := gpu.New(gpu.Options{})
	spec := refModels["sd35m"]
	m, err := load(t, rt, modelFile(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	if c.Hidden != 192 || c.Heads != 3 || c.Blocks != 3 || c.InChannels != 16 || c.OutChannels != 16 || c.PatchSize != 2 ||
		c.ADMInChannels != 32 || c.ContextInDim != 64 || c.PosEmbedMaxSize != 8 || c.MLPHidden != 768 || !c.QKNormRMS ||
		len(c.XBlockSelfAttn) != 2 || c.XBlockSelfAttn[1] != 2 {
		t.Errorf("config %+v", c)
	}
	drop := func(name string) func([]sd.RandomTensor) []sd.RandomTensor {
		return func(ts []sd.RandomTensor) []sd.RandomTensor {
			out := ts[:0]
			for _, x := range ts {
				if x.Name != name {
					out = append(out, x)
				}
			}
			return out
		}
	}
	add := func(name string, shape ...int) func([]sd.RandomTensor) []sd.RandomTensor {
		return func(ts []sd.RandomTensor) []sd.RandomTensor {
			return append(ts, sd.RandomTensor{Name: name, Shape: shape, Scale: 1})
		}
	}
	reshape := func(name string, shape ...int) func([]sd.RandomTensor) []sd.RandomTensor {
		return func(ts []sd.RandomTensor) []sd.RandomTensor {
			for i := range ts {
				if ts[i].Name == name {
					ts[i].Shape = shape
				}
			}
			return ts
		}
	}
	for _, tc := range []struct {
		name string
		edit func([]sd.RandomTensor) []sd.RandomTensor
		want string
	}{
		{"missing", drop("joint_blocks.1.x_block.mlp.fc2.weight"), "joint_blocks.1.x_block.mlp.fc2.weight"},
		{"scales without the marker", add("joint_blocks.0.x_block.attn.qkv.scale_weight", 1), "without a scaled_fp8 marker"},
		{"context processor", add("context_processor.layers.0.attn.qkv.weight", 64, 64), "context processor"},
		{"wrong width", reshape("joint_blocks.1.x_block.attn.proj.weight", 192, 100), "joint_blocks.1.x_block.attn.proj.weight"},
		{"not square table", reshape("pos_embed", 1, 60, 192), "square"},
		{"partial q/k norms", drop("joint_blocks.2.context_block.attn.ln_k.weight"), "q/k norms"},
		{"hidden not 64k", func(ts []sd.RandomTensor) []sd.RandomTensor {
			return reshape("x_embedder.proj.weight", 100, 16, 2, 2)(ts)
		}, "multiple of 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, rt, edited(t, spec, tc.edit))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if _, err := load(t, rt, edited(t, spec, drop(mmdit.Probe))); err == nil {
		t.Error("a file without the probe key loaded")
	}
}

// TestForwardErrors: inputs that do not fit the model are errors naming the input, a
// latent beyond the position table says how far it reaches, and a cancelled context
// stops between blocks.
func TestForwardErrors(t *testing.T) {
	rt, _ := gpu.New(gpu.Options{})
	m, err := load(t, rt, modelFile(t, refModels["sd3"]))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(shape ...int) *gpu.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		x, _ := rt.FromFloat32(make([]float32, n), shape...)
		return x
	}
	ok := mmdit.Inputs{X: mk(1, 16, 8, 8), Timesteps: mk(1), Context: mk(1, 3, 64), Y: mk(1, 32)}
	for _, tc := range []struct {
		name string
		edit func(*mmdit.Inputs)
		want string
	}{
		{"no context", func(in *mmdit.Inputs) { in.Context = nil }, "required"},
		{"channels", func(in *mmdit.Inputs) { in.X = mk(1, 4, 8, 8) }, "x"},
		{"timesteps", func(in *mmdit.Inputs) { in.Timesteps = mk(2) }, "timesteps"},
		{"context width", func(in *mmdit.Inputs) { in.Context = mk(1, 3, 4096) }, "context"},
		{"y width", func(in *mmdit.Inputs) { in.Y = mk(1, 2048) }, "y"},
		{"too large", func(in *mmdit.Inputs) { in.X = mk(1, 16, 18, 8) }, "position table covers at most 8×8"},
		{"skip", func(in *mmdit.Inputs) { in.Skip = []int{-1} }, "skip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := ok
			tc.edit(&in)
			if _, err := m.Forward(context.Background(), rt, in); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Forward(ctx, rt, ok); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
