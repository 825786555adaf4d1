package rng

import "testing"

// The C++ standard fixes this value: the 10000th output of a default-constructed
// std::mt19937 (seed 5489) is 4123659995 ([rand.predef]).
func TestMT19937Standard(t *testing.T) {
	var m mt19937
	m.seed(5489)
	var v uint32
	for range 10000 {
		v = m.uint32()
	}
	if v != 4123659995 {
		t.Fatalf("10000th output = %d, want 4123659995", v)
	}
}

// Only the low 32 bits of a seed reach the engine, as in torch.manual_seed on CPU.
func TestSeedLow32Bits(t *testing.T) {
	a, b := make([]float32, 20), make([]float32, 20)
	New(42).Randn(a)
	New(1<<32 + 42).Randn(b)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seed 2^32+42 differs from 42 at %d", i)
		}
	}
}

func TestPrepareNoiseErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape []int
		inds  []int
	}{
		{"empty shape", nil, nil},
		{"negative dim", []int{1, -4, 8, 8}, nil},
		{"negative index", []int{2, 4, 8, 8}, []int{0, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := PrepareNoise(1, tc.shape, tc.inds); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
