package sampling

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
)

func TestSchedulerNamesMatchComfyUI(t *testing.T) {
	want := []string{"simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal"}
	if got := SchedulerNames(); !slices.Equal(got, want) {
		t.Fatalf("SchedulerNames() = %v, want %v", got, want)
	}
	if _, err := LookupScheduler("nope"); err == nil {
		t.Fatal("unknown scheduler accepted")
	}
}

func TestKSamplerSigmasEdges(t *testing.T) {
	ms := NewSD(EPS)
	s, err := KSamplerSigmas(ms, "normal", "euler", 10, 0)
	if err != nil || len(s) != 0 {
		t.Fatalf("denoise 0: %v, %v; want no sigmas", s, err)
	}
	if _, err := KSamplerSigmas(ms, "normal", "euler", -1, 1); err == nil {
		t.Fatal("negative steps accepted")
	}
	s, _ = KSamplerSigmas(ms, "karras", "euler", 20, 1)
	if len(s) != 21 || s[20] != 0 || math.Abs(float64(s[0]-ms.SigmaMax())) > 1e-5 {
		t.Fatalf("karras 20: len %d first %v last %v", len(s), s[0], s[len(s)-1])
	}
}

// betaPPF must invert the regularized incomplete beta function: I_x(a, b) = q.
func TestBetaPPFInvertsCDF(t *testing.T) {
	for _, ab := range [][2]float64{{0.6, 0.6}, {2, 5}, {0.5, 3}} {
		for _, q := range []float64{1e-6, 0.01, 0.25, 0.5, 0.75, 0.99} {
			x := betaPPF(q, ab[0], ab[1])
			if got := regIncBeta(x, ab[0], ab[1]); math.Abs(got-q) > 1e-12 {
				t.Errorf("a=%v b=%v q=%v: I(ppf) = %v", ab[0], ab[1], q, got)
			}
		}
	}
	// Beta(1,1) is uniform: the quantile is q itself.
	if x := betaPPF(0.3, 1, 1); math.Abs(x-0.3) > 1e-14 {
		t.Errorf("uniform ppf(0.3) = %v", x)
	}
}

// cancelModel cancels its context on the first call, as an interrupt arriving during a
// step would.
type cancelModel struct {
	cancel context.CancelFunc
	calls  int
}

func (m *cancelModel) Denoise(_ context.Context, x []float32, _ float32) ([]float32, []float32, error) {
	m.calls++
	m.cancel()
	out := make([]float32, len(x))
	return out, out, nil
}

// Every sampler stops within one step of a cancellation and reports it.
func TestSamplersStopOnCancel(t *testing.T) {
	ms := NewSD(EPS)
	sigmas, err := KSamplerSigmas(ms, "karras", "euler", 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range SamplerNames() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m := &cancelModel{cancel: cancel}
			noise := make([]float32, 16)
			_, err := Sample(ctx, name, m, sigmas, noise, nil, &Options{ModelSampling: ms, Seed: 1})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			if m.calls > 4 {
				t.Fatalf("%d model calls after cancellation", m.calls)
			}
		})
	}
}
