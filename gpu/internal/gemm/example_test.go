package gemm_test

import (
	"encoding/binary"
	"fmt"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

func ExampleSGEMM() {
	// C (2×2) = A (2×3) · B (3×2), row-major.
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{1, 0, 0, 1, 1, 1}
	c := make([]float32, 4)
	if err := gemm.SGEMM(2, 2, 3, a, 3, b, 2, c, 2, false); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c)
	// Output: [4 5 10 11]
}

func ExampleEngine_Linear() {
	e, err := gemm.New(gemm.Options{Threads: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	// One Q8_0 block: a weight row of 32 elements with scale 0.5 and
	// quants 0, 1, 2, …, 31, so W[0][i] = i/2.
	blk := make([]byte, 34)
	binary.LittleEndian.PutUint16(blk, 0x3800) // 0.5 in binary16
	for i := 0; i < 32; i++ {
		blk[2+i] = byte(i)
	}
	w := gemm.Weight{DType: gemm.Q8_0, N: 1, K: 32, Data: blk}
	x := make([]float32, 32)
	for i := range x {
		x[i] = 1
	}
	y := []float32{10} // a bias, kept by accumulate
	if err := e.Linear(1, x, 32, w, y, 1, true); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(y[0]) // 10 + (0+1+…+31)/2
	// Output: 258
}
