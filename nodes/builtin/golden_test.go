package builtin

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/nodes"
)

// readF32Safetensors reads the float32 tensors of a small .safetensors file (8-byte
// little-endian header length, JSON header, raw data) and the case tolerance.
func readF32Safetensors(t *testing.T, path string) (map[string][]float32, map[string][]int, [2]float64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 8 {
		t.Fatalf("%s: truncated", path)
	}
	n := binary.LittleEndian.Uint64(data)
	if n > uint64(len(data)-8) {
		t.Fatalf("%s: header length %d", path, n)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		t.Fatal(err)
	}
	body := data[8+n:]
	tensors, shapes := map[string][]float32{}, map[string][]int{}
	var tol [2]float64
	for name, raw := range header {
		if name == "__metadata__" {
			var meta struct{ Case string }
			if err := json.Unmarshal(raw, &meta); err != nil {
				t.Fatal(err)
			}
			var c struct {
				Tolerance struct{ Abs, Rel float64 }
			}
			if err := json.Unmarshal([]byte(meta.Case), &c); err != nil {
				t.Fatal(err)
			}
			tol = [2]float64{c.Tolerance.Abs, c.Tolerance.Rel}
			continue
		}
		var info struct {
			Dtype   string
			Shape   []int
			Offsets [2]int `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatal(err)
		}
		if info.Dtype != "F32" {
			continue
		}
		b := body[info.Offsets[0]:info.Offsets[1]]
		v := make([]float32, len(b)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		tensors[name], shapes[name] = v, info.Shape
	}
	return tensors, shapes, tol
}

// TestImageScaleGolden runs the ImageScale node on ComfyUI's common_upscale fixtures
// (../shared/golden/upscale): the input NCHW tensor becomes an IMAGE, the node's output is
// compared with ComfyUI's for every target size and crop, so the NHWC/NCHW layout, the
// width/height order and the method wiring are checked end to end.
func TestImageScaleGolden(t *testing.T) {
	dir := filepath.Join(testenv.GoldenDir(t), "upscale")
	for _, method := range upscaleMethods {
		t.Run(method, func(t *testing.T) {
			tensors, shapes, tol := readF32Safetensors(t, filepath.Join(dir, method+".safetensors"))
			inName := "in.x"
			if method == "lanczos" {
				inName = "in.x_image"
			}
			x, ok := tensors[inName]
			if !ok {
				t.Fatalf("fixture has no %s", inName)
			}
			s := shapes[inName]
			src, err := ImageFromNCHW(x, s[0], s[1], s[2], s[3])
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, wh := range [][2]int{{16, 12}, {12, 16}, {16, 16}, {5, 6}} {
				for _, crop := range []string{"disabled", "center"} {
					key := fmt.Sprintf("out.%dx%d.%s", wh[0], wh[1], crop)
					want, ok := tensors[key]
					if !ok {
						continue
					}
					res := mustRun(t, "ImageScale", nodes.Inputs{"image": src, "upscale_method": method,
						"width": int64(wh[0]), "height": int64(wh[1]), "crop": crop})
					got := res.Outputs[0].(*Image)
					checkShape(t, got.Shape(), []int{s[0], wh[1], wh[0], s[1]})
					g := got.NCHW()
					bad := 0
					for i := range want {
						if d := math.Abs(float64(g[i] - want[i])); d > tol[0]+tol[1]*math.Abs(float64(want[i])) {
							bad++
						}
					}
					if bad > 0 {
						t.Errorf("%s: %d of %d values outside tolerance %v", key, bad, len(want), tol)
					}
					checked++
				}
			}
			if checked == 0 {
				t.Fatal("no output tensors compared")
			}
		})
	}
}
