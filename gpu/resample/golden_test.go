package resample

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// stTensor is one float32 tensor of a golden safetensors file.
type stTensor struct {
	shape []int
	data  []float32
}

// readSafetensors reads the F32 tensors of a small safetensors file. It is a test helper
// (gpu must not import weights/); the format is 8-byte little-endian header length, JSON
// header {name: {dtype, shape, data_offsets}}, then the data.
func readSafetensors(path string) (map[string]stTensor, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) < 8 {
		return nil, fmt.Errorf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(raw)
	if n > uint64(len(raw)-8) {
		return nil, fmt.Errorf("%s: header length %d out of range", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	body := raw[8+n:]
	out := map[string]stTensor{}
	for name, msg := range hdr {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			Dtype   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %v", path, name, err)
		}
		if e.Dtype != "F32" {
			continue
		}
		b := body[e.Offsets[0]:e.Offsets[1]]
		t := stTensor{shape: e.Shape, data: make([]float32, len(b)/4)}
		for i := range t.data {
			t.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		out[name] = t
	}
	return out, nil
}

type upscaleCase struct {
	Case   string `json:"case"`
	File   string `json:"file"`
	Config struct {
		Method  string   `json:"method"`
		Crops   []string `json:"crops"`
		Targets [][2]int `json:"targets_wxh"`
	} `json:"config"`
	Tolerance struct {
		Abs float64 `json:"abs"`
		Rel float64 `json:"rel"`
	} `json:"tolerance"`
}

// TestGoldenUpscale checks every case of the golden "upscale" family (ComfyUI's
// common_upscale outputs) element-wise within the case's {abs, rel} tolerance.
func TestGoldenUpscale(t *testing.T) {
	dir, cases := testenv.GoldenCases[upscaleCase](t, "upscale")
	for _, tc := range cases {
		t.Run(tc.Case, func(t *testing.T) {
			ts, err := readSafetensors(filepath.Join(dir, tc.File))
			if err != nil {
				t.Fatal(err)
			}
			in, ok := ts["in.x"]
			if tc.Config.Method == "lanczos" {
				in, ok = ts["in.x_image"]
			}
			if !ok || len(in.shape) != 4 {
				t.Fatalf("no 4-d input tensor in %s", tc.File)
			}
			checked := 0
			for name, want := range ts {
				if !strings.HasPrefix(name, "out.") {
					continue
				}
				parts := strings.Split(strings.TrimPrefix(name, "out."), ".")
				wh := strings.Split(parts[0], "x")
				if len(parts) != 2 || len(wh) != 2 {
					t.Fatalf("unexpected output name %q", name)
				}
				w, _ := strconv.Atoi(wh[0])
				h, _ := strconv.Atoi(wh[1])
				s := in.shape
				got, err := Upscale(in.data, s[0], s[1], s[2], s[3], w, h, tc.Config.Method, parts[1])
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				if len(got) != len(want.data) {
					t.Errorf("%s: got %d values, want %d", name, len(got), len(want.data))
					continue
				}
				bad := 0
				for i := range got {
					d := math.Abs(float64(got[i]) - float64(want.data[i]))
					if !(d <= tc.Tolerance.Abs+tc.Tolerance.Rel*math.Abs(float64(want.data[i]))) {
						if bad < 3 {
							t.Errorf("%s[%d]: got %v, want %v", name, i, got[i], want.data[i])
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d values outside tolerance", name, bad, len(got))
				}
				checked++
			}
			if want := len(tc.Config.Crops) * len(tc.Config.Targets); checked != want {
				t.Errorf("checked %d outputs, manifest implies %d", checked, want)
			}
		})
	}
}
