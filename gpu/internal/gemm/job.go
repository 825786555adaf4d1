package gemm

import (
	"sync/atomic"
)

// phase names what the work items of a job are.
type phase int

const (
	phaseTasks  phase = iota // independent rectangles (job.taskAt, Engine.compute)
	phasePackB               // groups of slivers of a shared B block
	phaseBlocks              // row blocks of A against a shared B block
	phaseRows                // chunks of output columns of linearRows
	phasePackA               // groups of slivers of a shared A (runPacked)
	phasePacked              // (row block, column block) items against a Packed B
)

// job is the state of one call while its workers run. Jobs are pooled and
// each phase is handed to the Engine's worker pool as the job itself (a
// par.Task), so a call in the steady state allocates nothing.
type job struct {
	e    *Engine
	p    problem
	ph   phase
	n    int
	next atomic.Int64

	mParts, nParts int // phaseTasks: the split of each product

	// runShared: operands and the current (jc, pc) block.
	a                            aSource
	b                            bSource
	c, bp                        []float32
	jc, nc, pc, kc, blk, slivers int
	acc                          bool

	// runPacked: the grid of items and the shared A, if any.
	rowBlocks, mPad, aGroups int
	sharedA                  []float32
}

func (e *Engine) newJob(p *problem) *job {
	j, ok := e.jobs.get(nil)
	if !ok {
		j = new(job)
	}
	j.e, j.p = e, *p
	j.a, j.b, j.c, j.bp, j.sharedA = aSource{}, bSource{}, nil, nil, nil
	return j
}

// do runs the n items of phase ph on up to workers goroutines of the pool
// (the caller's included) and returns when all are done. The items are
// handed out from a counter rather than split statically: a worker that
// runs late (another process took its core) simply takes fewer of them.
func (j *job) do(ph phase, n, workers int) {
	j.ph, j.n = ph, n
	j.next.Store(0)
	j.e.pool.Run(min(workers, n), 1, j)
}

// Run implements par.Task: each of the pool's parts takes items until none
// are left.
func (j *job) Run(_, _, _ int) { j.loop() }

func (j *job) loop() {
	ws := j.e.getWorkspace()
	for {
		i := int(j.next.Add(1)) - 1
		if i >= j.n {
			break
		}
		switch j.ph {
		case phaseTasks:
			j.e.compute(&j.p, j.taskAt(i), ws)
		case phasePackB:
			j.packBGroup(ws, i)
		case phaseBlocks:
			j.rowBlock(ws, i)
		case phaseRows:
			j.rowChunkDots(ws, i)
		case phasePackA:
			j.packAGroup(i)
		case phasePacked:
			j.packedItem(ws, i)
		}
	}
	j.e.bufs.put(ws)
}
