package rng

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type brownianCase struct {
	testenv.Case
	Seed          json.Number   `json:"seed"`
	Seeds         []json.Number `json:"seeds"`
	SpawnKeys     [][2]uint64   `json:"spawn_keys"`
	Shape         []int         `json:"shape"`
	RootSeedState []uint32      `json:"root_seed_state"`
}

// TestGoldenBrownian runs every case of golden/brownian: a case with spawn keys is a
// table of numpy SeedSequence states; the others query one Brownian tree, built from
// in.sigmas as the samplers build it, with in.queries.
func TestGoldenBrownian(t *testing.T) {
	_, cases := testenv.GoldenCases[brownianCase](t, "brownian")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			f, err := safetensors.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if c.Has("spawn_keys") {
				checkSeedSequence(t, f, c)
				return
			}
			for _, field := range []string{"seed", "root_seed_state", "shape"} {
				if !c.Has(field) {
					t.Fatal(c.FieldError(field, "missing"))
				}
			}
			seed := parseSeed(t, c.Seed)
			if len(c.RootSeedState) != 3 {
				t.Fatal(c.FieldError("root_seed_state", "%d words, want 3", len(c.RootSeedState)))
			}
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
			per := 1
			for _, d := range c.Shape {
				per *= d
			}
			tree, err := NewBrownianTree(smin, smax, per, seed)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Close(t, "out.W_root", tree.root.w, floats(t, f, "out.W_root"), c.Tolerance)
			q := floats(t, f, "in.queries")
			wantW, wantN := floats(t, f, "out.W"), floats(t, f, "out.noise")
			if len(wantW) != len(q)/2*per || len(wantN) != len(wantW) {
				t.Fatalf("%d queries: out.W has %d values, out.noise %d, want %d each", len(q)/2, len(wantW), len(wantN), len(q)/2*per)
			}
			for k := 0; k < len(q)/2; k++ {
				w := tree.Increment(q[2*k], q[2*k+1])
				testenv.Close(t, fmt.Sprintf("out.W[%d]", k), w, wantW[k*per:(k+1)*per], c.Tolerance)
				n := tree.Noise(q[2*k], q[2*k+1])
				testenv.Close(t, fmt.Sprintf("out.noise[%d]", k), n, wantN[k*per:(k+1)*per], c.Tolerance)
			}
		})
	}
}

func checkSeedSequence(t *testing.T, f *safetensors.File, c brownianCase) {
	root := ints(t, f, "out.root_state")
	node := ints(t, f, "out.node_state")
	if len(c.Seeds) == 0 || len(root) != 3*len(c.Seeds) || len(node) != 4*len(c.Seeds)*len(c.SpawnKeys) {
		t.Fatalf("%d seeds and %d spawn keys: out.root_state has %d words, out.node_state %d", len(c.Seeds), len(c.SpawnKeys), len(root), len(node))
	}
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
