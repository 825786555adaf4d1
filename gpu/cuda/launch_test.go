package cuda

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func TestMergeDims(t *testing.T) {
	cases := []struct {
		name    string
		shape   []int
		strides [][]int
		wantSh  []int
		wantSt  [][]int
	}{
		{"contiguous", []int{2, 3, 4}, [][]int{{12, 4, 1}}, []int{24}, [][]int{{1}}},
		{"size-1-dims", []int{1, 5, 1, 2}, [][]int{{99, 2, 77, 1}}, []int{10}, [][]int{{1}}},
		{"transposed", []int{3, 4}, [][]int{{1, 3}}, []int{3, 4}, [][]int{{1, 3}}},
		{"narrowed-rows", []int{2, 3, 4}, [][]int{{24, 8, 1}}, []int{6, 4}, [][]int{{8, 1}}},
		{"broadcast-pair", []int{2, 3, 4}, [][]int{{12, 4, 1}, {0, 0, 1}}, []int{6, 4}, [][]int{{4, 1}, {0, 1}}},
		{"broadcast-rows", []int{2, 3, 4}, [][]int{{12, 4, 1}, {4, 0, 1}}, []int{2, 3, 4}, [][]int{{12, 4, 1}, {4, 0, 1}}},
		{"scalar", []int{}, [][]int{{}}, nil, [][]int{nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sh, st := mergeDims(tc.shape, tc.strides...)
			if !slices.Equal(sh, tc.wantSh) {
				t.Fatalf("shape %v, want %v", sh, tc.wantSh)
			}
			for i := range st {
				if !slices.Equal(st[i], tc.wantSt[i]) {
					t.Errorf("strides[%d] %v, want %v", i, st[i], tc.wantSt[i])
				}
			}
			// every merged view addresses the same elements as the original
			for v := range tc.strides {
				n := 1
				for _, d := range tc.shape {
					n *= d
				}
				for lin := 0; lin < n; lin++ {
					if a, b := offsetOf(lin, tc.shape, tc.strides[v]), offsetOf(lin, sh, st[v]); a != b {
						t.Fatalf("view %d element %d: %d vs %d", v, lin, a, b)
					}
				}
			}
		})
	}
	if _, err := descOf(make([]int, 9), make([]int, 9), 0); err == nil {
		t.Error("rank 9 accepted")
	}
}

// offsetOf is desc_offset in Go.
func offsetOf(lin int, shape, strides []int) int {
	off := 0
	for i := len(shape) - 1; i >= 0; i-- {
		off += lin % shape[i] * strides[i]
		lin /= shape[i]
	}
	return off
}

// TestDescLayout checks that desc matches common.cuh's struct Desc: two int64 fields and
// two arrays of FF_MAXR int64, no padding.
func TestDescLayout(t *testing.T) {
	if got := unsafe.Sizeof(desc{}); got != 16+2*8*maxRank {
		t.Fatalf("desc is %d bytes", got)
	}
	src, _ := moduleSource(modElementwise)
	if !strings.Contains(src, fmt.Sprintf("\n#define FF_MAXR %d\n", maxRank)) {
		t.Fatal("FF_MAXR in common.cuh differs from maxRank")
	}
}

func TestBatchStride(t *testing.T) {
	for _, tc := range []struct {
		shape, strides, batch []int
		want                  int
	}{
		{[]int{3, 4, 5}, []int{20, 5, 1}, []int{3}, 20},
		{[]int{4, 5}, []int{5, 1}, []int{2, 3}, 0},
		{[]int{2, 3, 4, 5}, []int{60, 20, 5, 1}, []int{2, 3}, 20},
		{[]int{1, 3, 4, 5}, []int{60, 20, 5, 1}, []int{2, 3}, -1},
	} {
		if got := batchStride(operand{shape: tc.shape, strides: tc.strides}, tc.batch); got != tc.want {
			t.Errorf("batchStride(%v %v over %v) = %d, want %d", tc.shape, tc.strides, tc.batch, got, tc.want)
		}
	}
}
