package gemm

import (
	"fmt"
	"time"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// Calibration is what Calibrate measured: the derived blocking, the
// candidates timed around it (the derived one first) with each one's best
// run, and the blocking chosen.
type Calibration struct {
	Derived    Blocking
	Chosen     Blocking
	Candidates []Candidate
}

// Candidate is one blocking Calibrate timed and its fastest run.
type Candidate struct {
	Blocking Blocking
	Best     time.Duration
}

// calibrationShape is one Linear product (m rows, depth k, n outputs).
type calibrationShape struct{ m, k, n int }

// calibrationShapes are SD1.5 UNet products at 512², with fewer rows: the
// 64×64 level's feed-forward input (320 → 1280), the 32×32 level's
// projections (640 → 640) and a 3×3 convolution at 320 channels (depth
// 2880: several KC panels). About 3.5 GFLOP per round, some 10 ms on a
// quiet Zen 5 core pair.
var calibrationShapes = []calibrationShape{{2048, 320, 1280}, {1024, 640, 640}, {512, 2880, 320}}

// calibrationRounds is how many timed rounds follow the warm-up; each
// candidate keeps its fastest, which other load can only slow down.
const calibrationRounds = 2

// calibrationMargin: another candidate replaces the derived blocking only
// when its best run is this much faster (1/25 = 4 %); the blocking sweeps
// of codex/gemm.md found ±4 % between neighbours to be noise.
const calibrationMargin = 25

// Calibrate times a few blockings around the derived one for opts (its Path,
// Threads, BF16 and Widen16; Source and Blocking are ignored) on SD-shaped
// Linear products with F16 weights, packed where the kernel packs them as
// the UNet does: the derived blocking, KC a quarter smaller and a third
// larger, and the fixed constants. It keeps another candidate only when it
// wins by more than 4 %, so that noise keeps the derived blocking. It takes
// a few hundred milliseconds; callers cache the result (gpu does, per CPU
// model and code version).
func Calibrate(opts Options) (Calibration, error) {
	return calibrate(opts, calibrationShapes, calibrationRounds)
}

func calibrate(opts Options, shapes []calibrationShape, rounds int) (Calibration, error) {
	opts.Blocking = Blocking{}
	opts.Source = BlockingDerived
	derived, err := New(opts)
	if err != nil {
		return Calibration{}, err
	}
	opts.Source = BlockingFixed
	fixed, err := New(opts)
	if err != nil {
		return Calibration{}, err
	}
	cal := Calibration{Derived: derived.Blocking(), Chosen: derived.Blocking()}
	engines := []*Engine{derived}
	for _, b := range calibrationCandidates(derived.Blocking(), fixed.Blocking()) {
		o := opts
		o.Source, o.Blocking = BlockingDerived, b
		e, err := New(o)
		if err != nil {
			return Calibration{}, err
		}
		engines = append(engines, e)
	}
	run, err := calibrationRun(derived, shapes)
	if err != nil {
		return Calibration{}, err
	}
	best := make([]time.Duration, len(engines))
	for round := 0; round <= rounds; round++ {
		for i, e := range engines {
			d, err := run(e)
			if err != nil {
				return Calibration{}, err
			}
			if round > 0 && (round == 1 || d < best[i]) {
				best[i] = d
			}
		}
	}
	win := 0
	for i, e := range engines {
		cal.Candidates = append(cal.Candidates, Candidate{Blocking: e.Blocking(), Best: best[i]})
		if best[i] < best[win] {
			win = i
		}
	}
	if win > 0 && best[win] < best[0]-best[0]/calibrationMargin {
		cal.Chosen = engines[win].Blocking()
	}
	return cal, nil
}

// calibrationCandidates lists the blockings timed beside the derived one d:
// KC a quarter smaller and a third larger (MC and NC scaled to keep the A
// and B blocks' bytes), and the fixed constants f; duplicates of d are left
// out.
func calibrationCandidates(d, f Blocking) []Blocking {
	scale := func(num, den int) Blocking {
		kc := max(32, d.KC*num/den/32*32)
		return Blocking{KC: kc, MC: max(1, d.MC*d.KC/kc), NC: max(1, d.NC*d.KC/kc)}
	}
	var out []Blocking
	for _, b := range []Blocking{scale(3, 4), scale(4, 3), f} {
		dup := b == d
		for _, o := range out {
			dup = dup || o == b
		}
		if !dup {
			out = append(out, b)
		}
	}
	return out
}

// calibrationRun makes the operands of shapes once (fixed pseudo-random
// values, F16 weights packed by e where its kernel packs them) and returns
// a function that runs them all on an Engine and reports the CPU time the
// process spent (wall time off unix). CPU time is what the blocking
// changes; wall time on a shared machine also counts the slices other
// processes took, which made wall-clock choices a matter of luck (best
// runs 20–59 ms for the same work under load 16).
func calibrationRun(e *Engine, shapes []calibrationShape) (func(*Engine) (time.Duration, error), error) {
	type operands struct {
		s    calibrationShape
		x, y []float32
		w    Weight
	}
	seed := uint32(1)
	next := func() float32 { // xorshift: any spread of values will do
		seed ^= seed << 13
		seed ^= seed >> 17
		seed ^= seed << 5
		return float32(seed)/(1<<32) - 0.5
	}
	ops := make([]operands, len(shapes))
	for i, s := range shapes {
		o := &ops[i]
		o.s = s
		o.x, o.y = make([]float32, s.m*s.k), make([]float32, s.m*s.n)
		for j := range o.x {
			o.x[j] = next()
		}
		data := make([]byte, 2*s.n*s.k)
		for j := 0; j < len(data); j += 2 {
			h := dtype.F32ToF16(next() * 0.1)
			data[j], data[j+1] = byte(h), byte(h>>8)
		}
		o.w = Weight{DType: F16, N: s.n, K: s.k, Data: data}
		if e.CanPack(F16) {
			pk, err := e.Pack(o.w)
			if err != nil {
				return nil, fmt.Errorf("gemm: calibration: %w", err)
			}
			o.w.Packed = pk
		}
	}
	return func(e *Engine) (time.Duration, error) {
		start := elapsed()
		for _, o := range ops {
			if err := e.Linear(o.s.m, o.x, o.s.k, o.w, o.y, o.s.n, false); err != nil {
				return 0, fmt.Errorf("gemm: calibration: %w", err)
			}
		}
		return elapsed() - start, nil
	}, nil
}

// clockStart anchors elapsed's wall-clock fallback.
var clockStart = time.Now()

// elapsed is the clock the calibrations read: the process's CPU time, or
// the wall clock where that is not measured.
func elapsed() time.Duration {
	if t := processCPUTime(); t > 0 {
		return t
	}
	return time.Since(clockStart)
}
