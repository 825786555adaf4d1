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

// TestRandint: torch.manual_seed(1234); torch.randn(40); then torch.randint(0, h, (1,))
// for each h below, printed by torch 2.6 (CPU) in the refpeer chroot.
func TestRandint(t *testing.T) {
	g := New(1234)
	g.Randn(make([]float32, 40))
	highs := []int64{1, 2, 3, 5, 7, 100, 1000003, 1 << 31}
	want := []int64{0, 1, 0, 3, 2, 3, 344955, 2015452060}
	for i, h := range highs {
		if got := g.Randint(0, h); got != want[i] {
			t.Errorf("randint(0, %d) = %d, torch %d", h, got, want[i])
		}
	}
}
