package sd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// doubleOp is a LatentOperation that doubles every value and records the shape it saw.
type doubleOp struct{ shape *[4]int }

func (o doubleOp) Apply(_ context.Context, data []float32, shape [4]int) ([]float32, error) {
	*o.shape = shape
	out := make([]float32, len(data))
	for i, v := range data {
		out[i] = 2 * v
	}
	return out, nil
}

type failOp struct{}

func (failOp) Apply(context.Context, []float32, [4]int) ([]float32, error) {
	return nil, errors.New("boom")
}

type shortOp struct{}

func (shortOp) Apply(_ context.Context, data []float32, _ [4]int) ([]float32, error) {
	return data[:1], nil
}

// TestLatentOperationCFG checks LatentApplyOperationCFG's pre_cfg_function: with two
// predictions op(cond − uncond) + uncond, a skipped uncond counting as zeros; with three
// (PerpNeg) op(cond) alone; the other predictions untouched, the inputs unchanged.
func TestLatentOperationCFG(t *testing.T) {
	shape := [4]int{1, 2, 1, 1}
	var seen [4]int
	op := doubleOp{&seen}
	cond, uncond, empty := []float32{3, 5}, []float32{1, -1}, []float32{7, 7}
	cases := []struct {
		name string
		outs [][]float32
		want []float32
	}{
		{"cond and uncond", [][]float32{cond, uncond}, []float32{2*(3-1) + 1, 2*(5+1) - 1}},
		{"uncond skipped (nil)", [][]float32{cond, nil}, []float32{6, 10}},
		{"three predictions", [][]float32{cond, uncond, empty}, []float32{6, 10}},
		{"cond alone", [][]float32{cond}, []float32{6, 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := make([][]float32, len(tc.outs))
			copy(in, tc.outs)
			got, err := applyLatentOperationCFG(context.Background(), op, shape, tc.outs)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got[0], tc.want) || seen != shape {
				t.Fatalf("cond %v (shape %v), want %v", got[0], seen, tc.want)
			}
			for i := 1; i < len(got); i++ {
				if !slices.Equal(got[i], in[i]) {
					t.Fatalf("prediction %d changed", i)
				}
			}
			if !slices.Equal(cond, []float32{3, 5}) || !slices.Equal(uncond, []float32{1, -1}) {
				t.Fatal("inputs changed")
			}
		})
	}
	if _, err := applyLatentOperationCFG(context.Background(), failOp{}, shape, [][]float32{cond, uncond}); err == nil || err.Error() != "boom" {
		t.Fatalf("failing op: %v", err)
	}
	if _, err := applyLatentOperationCFG(context.Background(), shortOp{}, shape, [][]float32{cond, uncond}); err == nil || !strings.Contains(err.Error(), "returned 1 values") {
		t.Fatalf("short op: %v", err)
	}
}
