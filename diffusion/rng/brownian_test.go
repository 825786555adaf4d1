package rng

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type brownianCase struct {
	Case          string                     `json:"case"`
	File          string                     `json:"file"`
	Seed          json.Number                `json:"seed"`
	Seeds         []json.Number              `json:"seeds"`
	SpawnKeys     [][2]uint64                `json:"spawn_keys"`
	Shape         []int                      `json:"shape"`
	RootSeedState []uint32                   `json:"root_seed_state"`
	Tolerance     struct{ Abs, Rel float64 } `json:"tolerance"`
}

func TestGoldenBrownian(t *testing.T) {
	dir, cases := testenv.GoldenCases[brownianCase](t, "brownian")
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			f, err := safetensors.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if c.Case == "seedsequence" {
				checkSeedSequence(t, f, c)
				return
			}
			seed := parseSeed(t, c.Seed)
			if st := NewSeedSequence(seed, nil, brownianPool).GenerateState(3); [3]uint32(st) != [3]uint32(c.RootSeedState) {
				t.Fatalf("root seed state %v, want %v", st, c.RootSeedState)
			}
			sigmas := floats(t, f, "in.sigmas")
			smin, smax := float32(math.Inf(1)), float32(0)
			for _, s := range sigmas {
				if s > 0 {
					smin = min(smin, s)
				}
				smax = max(smax, s)
			}
			tol := func(want float32) float64 { return c.Tolerance.Abs + c.Tolerance.Rel*math.Abs(float64(want)) }
			tree, err := NewBrownianTree(smin, smax, len(floats(t, f, "out.W_root")), seed)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, "out.W_root", tree.root.w, floats(t, f, "out.W_root"), tol)
			q := floats(t, f, "in.queries")
			wantW, wantN := floats(t, f, "out.W"), floats(t, f, "out.noise")
			per := len(tree.root.w)
			for k := 0; k < len(q)/2; k++ {
				w := tree.Increment(q[2*k], q[2*k+1])
				compare(t, "out.W", w, wantW[k*per:(k+1)*per], tol)
				n := tree.Noise(q[2*k], q[2*k+1])
				compare(t, "out.noise", n, wantN[k*per:(k+1)*per], tol)
			}
		})
	}
}

func checkSeedSequence(t *testing.T, f *safetensors.File, c brownianCase) {
	root := ints(t, f, "out.root_state")
	node := ints(t, f, "out.node_state")
	for si, s := range c.Seeds {
		seed := parseSeed(t, s)
		got := NewSeedSequence(seed, nil, brownianPool).GenerateState(3)
		for i, v := range got {
			if int64(v) != root[si*3+i] {
				t.Fatalf("seed %d root word %d = %d, want %d", seed, i, v, root[si*3+i])
			}
		}
		for ki, key := range c.SpawnKeys {
			got := NewSeedSequence(seed, key[:], brownianPool).GenerateState(4)
			for i, v := range got {
				if want := node[(si*len(c.SpawnKeys)+ki)*4+i]; int64(v) != want {
					t.Fatalf("seed %d key %v word %d = %d, want %d", seed, key, i, v, want)
				}
			}
		}
	}
}

func parseSeed(t *testing.T, n json.Number) uint64 {
	t.Helper()
	var v uint64
	if err := json.Unmarshal([]byte(n.String()), &v); err != nil {
		t.Fatalf("seed %s: %v", n, err)
	}
	return v
}

func floats(t *testing.T, f *safetensors.File, name string) []float32 {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ints(t *testing.T, f *safetensors.File, name string) []int64 {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	if tn.DType != weights.I64 {
		t.Fatalf("%s: dtype %s", name, tn.DType)
	}
	out := make([]int64, len(tn.Data)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(tn.Data[8*i:]))
	}
	return out
}
