package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// enginesUnderTest returns one Engine per path this machine can run, with
// two threads so that the task split is exercised even on one core.
func enginesUnderTest(t testing.TB) []*Engine {
	t.Helper()
	var es []*Engine
	for _, p := range []Path{PathGeneric, PathAVX2, PathAVX512} {
		if !Available(p) {
			t.Logf("path %s not available here", p)
			continue
		}
		e, err := New(Options{Path: p, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		// The same kernel with tiny blocks reaches every loop level (several
		// jc, pc and ic blocks) on small matrices.
		small, err := New(Options{Path: p, Threads: 2, Blocking: Blocking{KC: 16, MC: 24, NC: 64}})
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e, small)
	}
	return es
}

// engineName names an engine in test names: its path and, for a non-default
// blocking, the blocking.
func engineName(e *Engine) string {
	def, _ := New(Options{Path: e.Path()})
	if e.Blocking() == def.Blocking() {
		return e.Path().String()
	}
	b := e.Blocking()
	return fmt.Sprintf("%s-kc%d-mc%d-nc%d", e.Path(), b.KC, b.MC, b.NC)
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// refGEMM is the float64 reference: C (+)= op(A)·op(B), also returning the
// sum of |a·b| per element, the scale that float32 rounding error follows.
func refGEMM(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, acc bool) (want, mag []float64) {
	want = make([]float64, m*n)
	mag = make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, g float64
			if acc {
				s = float64(c[i*ldc+j])
				g = math.Abs(s)
			}
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				x := float64(av) * float64(bv)
				s += x
				g += math.Abs(x)
			}
			want[i*n+j] = s
			mag[i*n+j] = g
		}
	}
	return want, mag
}

// checkClose compares got against want with a float32 accumulation bound:
// |got-want| ≤ (k+2)·ε·Σ|a·b| (a standard dot-product error bound).
func checkClose(t *testing.T, m, n, k int, got []float32, ldc int, want, mag []float64) {
	t.Helper()
	const eps = 1.0 / (1 << 24)
	bad := 0
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			g := float64(got[i*ldc+j])
			tol := float64(k+2)*eps*mag[i*n+j] + 1e-30
			if d := math.Abs(g - want[i*n+j]); !(d <= tol) {
				if bad < 5 {
					t.Errorf("C[%d,%d] = %g, want %g (|diff| %g > tol %g)", i, j, g, want[i*n+j], d, tol)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d elements out of tolerance", bad, m*n)
	}
}

type shape struct{ m, n, k int }

func testShapes() []shape {
	s := []shape{
		{1, 1, 1}, {1, 7, 1}, {7, 1, 3}, {7, 17, 33}, {17, 7, 100}, {33, 33, 33},
		{12, 32, 8}, {24, 64, 256}, {13, 33, 257}, {100, 1, 17}, {1, 100, 300}, {120, 70, 400},
		{0, 5, 5}, {5, 0, 5}, {5, 5, 0}, {0, 0, 0},
	}
	if !testing.Short() {
		s = append(s, shape{257, 100, 513}, shape{100, 257, 600}, shape{130, 520, 70})
	}
	return s
}

func TestSGEMM(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, e := range enginesUnderTest(t) {
		for _, sh := range testShapes() {
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				for _, acc := range []bool{false, true} {
					name := fmt.Sprintf("%s/%dx%dx%d/tA=%v,tB=%v/acc=%v", engineName(e), sh.m, sh.n, sh.k, tr[0], tr[1], acc)
					t.Run(name, func(t *testing.T) {
						m, n, k := sh.m, sh.n, sh.k
						ar, ac := m, k
						if tr[0] {
							ar, ac = k, m
						}
						br, bc := k, n
						if tr[1] {
							br, bc = n, k
						}
						// Strides wider than the rows, with poison in the gaps.
						lda, ldb, ldc := ac+3, bc+5, n+2
						a := randSlice(r, max(ar*lda, 1))
						b := randSlice(r, max(br*ldb, 1))
						c := randSlice(r, max(m*ldc, 1))
						for i := 0; i < m; i++ {
							for j := n; j < ldc; j++ {
								c[i*ldc+j] = 12345
							}
						}
						want, mag := refGEMM(tr[0], tr[1], m, n, k, a, lda, b, ldb, c, ldc, acc)
						if err := e.SGEMMT(tr[0], tr[1], m, n, k, a, lda, b, ldb, c, ldc, acc); err != nil {
							t.Fatal(err)
						}
						checkClose(t, m, n, k, c, ldc, want, mag)
						for i := 0; i < m; i++ {
							for j := n; j < ldc; j++ {
								if c[i*ldc+j] != 12345 {
									t.Fatalf("wrote outside C at [%d,%d]", i, j)
								}
							}
						}
					})
				}
			}
		}
	}
}

func TestSGEMMBatched(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const batch, m, n, k = 3, 19, 45, 70
	for _, e := range enginesUnderTest(t) {
		for _, shareB := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/shareB=%v", engineName(e), shareB), func(t *testing.T) {
				sa, sb, sc := m*k+4, k*n+1, m*n+7
				if shareB {
					sb = 0
				}
				a := randSlice(r, batch*sa)
				b := randSlice(r, batch*max(sb, k*n))
				c := randSlice(r, batch*sc)
				orig := append([]float32(nil), c...)
				bt := Batch{Count: batch, StrideA: sa, StrideB: sb, StrideC: sc}
				if err := e.SGEMMBatched(bt, false, false, m, n, k, a, k, b, n, c, n, true); err != nil {
					t.Fatal(err)
				}
				for i := 0; i < batch; i++ {
					want, mag := refGEMM(false, false, m, n, k, a[i*sa:], k, b[i*sb:], n, orig[i*sc:], n, true)
					checkClose(t, m, n, k, c[i*sc:], n, want, mag)
				}
			})
		}
	}
}

// TestPathsAgree checks that every path gives the same product within
// float32 rounding, on a size that uses all loop levels.
func TestPathsAgree(t *testing.T) {
	es := enginesUnderTest(t)
	r := rand.New(rand.NewPCG(5, 6))
	m, n, k := 70, 300, 600
	a, b := randSlice(r, m*k), randSlice(r, k*n)
	var ref []float32
	for _, e := range es {
		c := make([]float32, m*n)
		if err := e.SGEMM(m, n, k, a, k, b, n, c, n, false); err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = c
			continue
		}
		for i := range c {
			if d := math.Abs(float64(c[i] - ref[i])); d > 1e-4*math.Sqrt(float64(k)) {
				t.Fatalf("%s vs %s: element %d: %g vs %g", e.Path(), es[0].Path(), i, c[i], ref[i])
			}
		}
	}
}

func TestSGEMMErrors(t *testing.T) {
	e, err := New(Options{Path: PathGeneric})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float32, 16)
	cases := []struct {
		name    string
		call    func() error
		wantErr string
	}{
		{"zero engine", func() error { return new(Engine).SGEMM(1, 1, 1, buf, 1, buf, 1, buf, 1, false) }, "not created with New"},
		{"nil engine linear", func() error {
			return (*Engine)(nil).Linear(1, buf, 1, Weight{N: 1, K: 1, Data: make([]byte, 4)}, buf, 1, false)
		}, "not created with New"},
		{"bad blocking", func() error { _, err := New(Options{Blocking: Blocking{KC: -1}}); return err }, "negative blocking"},
		{"unknown dtype", func() error {
			return e.Linear(1, buf, 1, Weight{DType: DType(99), N: 1, K: 1, Data: make([]byte, 4)}, buf, 1, false)
		}, "unknown weight dtype 99"},
		{"negative m", func() error { return e.SGEMM(-1, 2, 2, buf, 2, buf, 2, buf, 2, false) }, "negative size"},
		{"short lda", func() error { return e.SGEMM(2, 2, 3, buf, 2, buf, 2, buf, 2, false) }, "A: row stride 2 less than width 3"},
		{"short A", func() error { return e.SGEMM(4, 2, 5, buf, 5, buf, 2, buf, 2, false) }, "A: 16 elements, need 20"},
		{"short C", func() error { return e.SGEMM(2, 9, 2, buf, 2, make([]float32, 18), 9, buf, 9, false) }, "C: 16 elements, need 18"},
		{"batch C stride 0", func() error {
			return e.SGEMMBatched(Batch{Count: 2}, false, false, 2, 2, 2, buf, 2, buf, 2, buf, 2, false)
		}, "StrideC 0"},
		{"bad weight K", func() error {
			return e.Linear(1, buf, 16, Weight{DType: Q8_0, N: 1, K: 16, Data: make([]byte, 34)}, buf, 1, false)
		}, "not a multiple of the block size 32"},
		{"short weight", func() error {
			return e.Linear(1, buf, 4, Weight{DType: F16, N: 3, K: 4, Data: make([]byte, 20)}, buf, 3, false)
		}, "20 bytes, need 24"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Path
		err  bool
	}{
		{"", PathAuto, false}, {"generic", PathGeneric, false}, {"AVX2", PathAVX2, false},
		{"avx512", PathAVX512, false}, {"sse", 0, true},
	} {
		got, err := ParsePath(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParsePath(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// TestSGEMMBF16 checks the bfloat16 dot-product path against a float64
// product of the bfloat16-rounded inputs (what the hardware multiplies),
// with the float32 accumulation bound.
func TestSGEMMBF16(t *testing.T) {
	e, err := New(Options{BF16: true, Threads: 2})
	if err != nil {
		t.Skipf("bf16 path not available: %v", err)
	}
	small, err := New(Options{BF16: true, Threads: 2, Blocking: Blocking{KC: 16, MC: 24, NC: 64}})
	if err != nil {
		t.Fatal(err)
	}
	round := func(s []float32) []float32 {
		o := make([]float32, len(s))
		for i, v := range s {
			o[i] = math.Float32frombits(bf16Round(v) << 16)
		}
		return o
	}
	r := rand.New(rand.NewPCG(13, 14))
	for _, e := range []*Engine{e, small} {
		for _, sh := range testShapes() {
			for _, acc := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%dx%dx%d/acc=%v", engineName(e), sh.m, sh.n, sh.k, acc), func(t *testing.T) {
					m, n, k := sh.m, sh.n, sh.k
					lda, ldb, ldc := k+1, n+2, n+3
					a, b, c := randSlice(r, max(m*lda, 1)), randSlice(r, max(k*ldb, 1)), randSlice(r, max(m*ldc, 1))
					want, mag := refGEMM(false, false, m, n, k, round(a), lda, round(b), ldb, c, ldc, acc)
					if err := e.SGEMM(m, n, k, a, lda, b, ldb, c, ldc, acc); err != nil {
						t.Fatal(err)
					}
					checkClose(t, m, n, k, c, ldc, want, mag)
				})
			}
		}
	}
}

func TestBF16Round(t *testing.T) {
	for _, tc := range []struct {
		in   uint32
		want uint32
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above the tie
		{0x7f7fffff, 0x7f80}, // max float rounds to +Inf
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800001, 0xffc0}, // NaN stays NaN (quieted)
		{0x80000000, 0x8000}, // -0
	} {
		if got := bf16Round(math.Float32frombits(tc.in)); got != tc.want {
			t.Errorf("bf16Round(%#08x) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

// TestPackT checks every path's transposing packer against the
// definition dst[p·stride+i] = src[i·ld+p], for the A (12 or 6 rows) and B
// (32 or 16 rows) widths, at depths with and without a 16-column tail.
func TestPackT(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, e := range enginesUnderTest(t) {
		for _, rows := range []int{e.k.mr, e.k.nr} {
			for _, kc := range []int{1, 8, 15, 16, 17, 24, 40, 48, 100, 384} {
				ld := kc + 5
				src := randSlice(r, rows*ld)
				d := make([]float32, rows*kc)
				e.k.packT(d, src, ld, kc, rows, rows)
				for p := 0; p < kc; p++ {
					for i := 0; i < rows; i++ {
						if d[p*rows+i] != src[i*ld+p] {
							t.Fatalf("%s rows=%d kc=%d: dst[%d·%d+%d] = %g, want src[%d][%d] = %g", e.Path(), rows, kc, p, rows, i, d[p*rows+i], i, p, src[i*ld+p])
						}
					}
				}
			}
		}
	}
}

// TestBF16PairsFast checks the vector pair conversion against toBF16Pairs
// for both AVX-512 widths and odd and even depths.
func TestBF16PairsFast(t *testing.T) {
	e, err := New(Options{BF16: true})
	if err != nil {
		t.Skipf("bf16 path not available: %v", err)
	}
	r := rand.New(rand.NewPCG(23, 24))
	for _, w := range []int{12, 32} {
		for _, kc := range []int{1, 2, 3, 16, 17, 384} {
			x := randSlice(r, kc*w)
			y := append([]float32(nil), x...)
			toBF16Pairs(x, kc, w)
			e.k.pairsFn(y, kc, w)
			for i := 0; i < (kc+1)/2*w; i++ {
				if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
					t.Fatalf("w=%d kc=%d: element %d: %#08x, want %#08x", w, kc, i, math.Float32bits(y[i]), math.Float32bits(x[i]))
				}
			}
		}
	}
}

// TestCheckMatrixStrides covers strides that are legal because they are
// never used: a one-row matrix with a huge row stride, a one-product batch
// with a huge batch stride, and a broadcast (stride 0) batch longer than
// the data.
func TestCheckMatrixStrides(t *testing.T) {
	data := make([]float32, 6)
	for _, tc := range []struct {
		name                          string
		rows, cols, ld, count, stride int
		ok                            bool
	}{
		{"one row, wide stride", 1, 3, 1 << 40, 1, 0, true},
		{"one product, wide batch stride", 2, 3, 3, 1, 1 << 40, true},
		{"broadcast batch", 2, 3, 3, 100, 0, true},
		{"two products, overflowing stride", 1, 1, 1, 2, 1 << 62, false},
		{"overflowing rows", 1 << 62, 1, 1 << 62, 1, 0, false},
		{"just too short", 2, 3, 4, 1, 0, false},
	} {
		err := checkMatrix("X", data, tc.rows, tc.cols, tc.ld, tc.count, tc.stride)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
