package gpu_test

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// A linear layer with an F16 weight kept in its stored dtype, followed by SiLU.
func Example() {
	rt, err := gpu.New(gpu.Options{}) // cpu backend, all cores
	if err != nil {
		panic(err)
	}
	x, _ := rt.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3) // (rows, K)

	// W is (N, K) = (2, 3) in F16, as a checkpoint stores it; FromBytes does not copy.
	w16 := make([]byte, 2*6)
	_ = gpu.EncodeFloat32(gpu.F16, w16, []float32{1, 0, -1, 0.5, 0.5, 0.5})
	w, _ := rt.FromBytes(gpu.F16, w16, 2, 3)
	bias, _ := rt.FromFloat32([]float32{0, -1}, 2)

	y, err := gpu.Linear(rt, x, w, bias)
	if err != nil {
		panic(err)
	}
	defer y.Release()
	a, _ := gpu.SiLU(rt, y)
	defer a.Release()

	yv, _ := y.Float32()
	av, _ := a.Float32()
	fmt.Println(y.Shape(), yv)
	fmt.Printf("%.4f\n", av)
	// Output:
	// [2 2] [-2 2 -2 6.5]
	// [-0.2384 1.7616 -0.2384 6.4902]
}
