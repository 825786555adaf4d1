package gemm

// genericKernel is the portable path: a 4×8 register tile in plain Go. Its
// blocking follows the assembly paths so the loop structure is shared.
func genericKernel() kernel {
	return kernel{
		path: PathGeneric,
		mr:   4, nr: 8,
		kc: 256, mc: 128, nc: 512,
		tile: tileGeneric4x8, packT: packTGo,
		dot: dotGeneric, cvtF16: cvtF16Generic, cvtBF16: cvtBF16Generic,
		decQ8_0: decodeQ8_0, decQ4_0: decodeQ4_0, decQ4K: decodeQ4K,
	}
}

// dotGeneric sums with four partial sums, as the vector kernels do, so
// that the rounding of the paths stays comparable.
func dotGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// tileGeneric4x8 computes a 4×8 tile from packed slivers (kc×4 of A and
// kc×8 of B, k-major). The 32 accumulators are spelled out so that the
// compiler keeps as many as it can in registers.
func tileGeneric4x8(kc int, a, b, c []float32, ldc int, acc bool) {
	var c0, c1, c2, c3 [8]float32
	a = a[:kc*4]
	b = b[:kc*8]
	for p := 0; p < kc; p++ {
		bp := (*[8]float32)(b[p*8:])
		ap := (*[4]float32)(a[p*4:])
		a0, a1, a2, a3 := ap[0], ap[1], ap[2], ap[3]
		for j := 0; j < 8; j++ {
			bj := bp[j]
			c0[j] += a0 * bj
			c1[j] += a1 * bj
			c2[j] += a2 * bj
			c3[j] += a3 * bj
		}
	}
	rows := [4]*[8]float32{&c0, &c1, &c2, &c3}
	for i, r := range rows {
		dst := (*[8]float32)(c[i*ldc:])
		if acc {
			for j := range dst {
				dst[j] += r[j]
			}
		} else {
			*dst = *r
		}
	}
}
