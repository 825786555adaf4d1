package sd

import (
	"bytes"
	"testing"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestRandomSpecFullSize checks that the full-size random specs list exactly the
// tensors weights/detect recognises as the released architectures (shapes only; no
// data is drawn).
func TestRandomSpecFullSize(t *testing.T) {
	tests := []struct {
		spec     RandomSpec
		family   detect.Family
		encoders int
		params   int64
	}{
		{SD15RandomSpec(), detect.FamilySD1, 1, 1_066_235_307},
		{SDXLRandomSpec(), detect.FamilySDXL, 2, 3_468_837_868},
		{SDXLRefinerRandomSpec(), detect.FamilySDXLRefiner, 1, 0},
	}
	for _, tc := range tests {
		t.Run(string(tc.family), func(t *testing.T) {
			ts, err := tc.spec.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			var infos []weights.TensorInfo
			var n int64
			for _, x := range ts {
				shape := make([]int64, len(x.Shape))
				size := int64(1)
				for i, d := range x.Shape {
					shape[i] = int64(d)
					size *= int64(d)
				}
				n += size
				infos = append(infos, weights.TensorInfo{Name: x.Name, DType: weights.F16, Shape: shape, Size: 2 * size})
			}
			m, err := detect.Detect(detect.Input{Tensors: infos})
			if err != nil {
				t.Fatal(err)
			}
			if m.Family != tc.family || m.Diffusion == nil || !m.Diffusion.Exact || m.Diffusion.Prediction != detect.PredictEps {
				t.Fatalf("detected %+v", m.Diffusion)
			}
			if len(m.TextEncoders) != tc.encoders || m.VAE == nil {
				t.Fatalf("detected %d text encoders, VAE %v", len(m.TextEncoders), m.VAE)
			}
			for _, te := range m.TextEncoders {
				if !te.Exact {
					t.Errorf("text encoder %s under %s is not the released size", te.Family, te.Prefix)
				}
			}
			if tc.params != 0 && n != tc.params {
				t.Errorf("%d parameters, want %d", n, tc.params)
			}
			t.Logf("%s: %d tensors, %d parameters", tc.family, len(ts), n)
		})
	}
}

func TestWriteRandomCheckpointDeterministic(t *testing.T) {
	var a, b, c bytes.Buffer
	s := tinySD1(3)
	if err := WriteRandomCheckpoint(&a, s); err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomCheckpoint(&b, s); err != nil {
		t.Fatal(err)
	}
	s.Seed = 4
	if err := WriteRandomCheckpoint(&c, s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Error("the file does not depend on the spec alone")
	}
	s.DType = weights.I8
	if err := WriteRandomCheckpoint(&c, s); err == nil {
		t.Error("an integer dtype was accepted")
	}
	s = RandomSpec{Family: detect.FamilySD3}
	if err := WriteRandomCheckpoint(&c, s); err == nil {
		t.Error("an empty spec was accepted")
	}
}
