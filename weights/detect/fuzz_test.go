package detect

import (
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/weights"
)

// FuzzDetect feeds arbitrary tensor lists (names one per line, shapes from the bytes)
// to Detect: it must return a model or an error, never panic.
func FuzzDetect(f *testing.F) {
	for _, ts := range []tensors{tinyUNet.build(), fluxSpec{hidden: 8, headDim: 4, depth: 1, single: 1, ctx: 4, vec: 4, in: 16}.build(),
		vaeSpec{ch: 4, z: 4, nres: 1, mult: []int{1, 2}, quant: true}.build(), t5(1, 8, 2, 4, 8, true, true), sd3MMDiT()[:6]} {
		var names []string
		var shapes []byte
		for _, ti := range ts {
			names = append(names, ti.Name)
			shapes = append(shapes, byte(len(ti.Shape)))
			for _, d := range ti.Shape {
				shapes = append(shapes, byte(d))
			}
		}
		f.Add(strings.Join(names, "\n"), shapes)
	}
	f.Add("lora_unet_x.lora_down.weight\nlora_unet_x.lora_up.weight\nx.alpha", []byte{2, 4, 8, 2, 8, 4, 0})
	f.Fuzz(func(t *testing.T, names string, shapes []byte) {
		var in Input
		for _, n := range strings.Split(names, "\n") {
			var shape []int64
			if len(shapes) > 0 {
				rank := int(shapes[0] % 5)
				shapes = shapes[1:]
				for i := 0; i < rank && len(shapes) > 0; i++ {
					shape = append(shape, int64(int8(shapes[0]))) // negative dims too
					shapes = shapes[1:]
				}
			}
			in.Tensors = append(in.Tensors, weights.TensorInfo{Name: n, DType: weights.F32, Shape: shape})
		}
		in.Values = func(string) ([]float32, error) { return []float32{1, 2}, nil }
		m, err := Detect(in)
		if err == nil && m == nil {
			t.Fatal("no model and no error")
		}
	})
}
