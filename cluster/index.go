package cluster

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
)

// index is a process's in-memory view of the queue bucket, fed by a KV watch and by
// the process's own writes (so a method sees its own change at once). Every entry
// carries the revision it was read at; an older revision never replaces a newer one.
// Reads that must see other processes' writes first wait for the watch to reach the
// bucket's last revision (Queue.sync).
type index struct {
	log *slog.Logger

	mu      sync.Mutex
	recs    map[string]*indexed
	watched uint64        // the highest revision the watch has applied
	changed chan struct{} // closed and replaced on every change
	damaged map[string]uint64
}

// indexed is one id's record as of revision rev; rec nil means deleted.
type indexed struct {
	id  string
	rev uint64
	rec *record
}

func newIndex(log *slog.Logger) *index {
	return &index{log: log, recs: map[string]*indexed{}, changed: make(chan struct{}), damaged: map[string]uint64{}}
}

// apply stores id's record at rev unless a newer one is known. rec is taken as
// stored; its zero slots are filled from rev.
func (x *index) apply(id string, rev uint64, rec *record) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.applyLocked(id, rev, rec)
}

func (x *index) applyLocked(id string, rev uint64, rec *record) {
	if cur, ok := x.recs[id]; ok && cur.rev >= rev {
		return
	}
	if rec != nil {
		if rec.empty() {
			rec = nil
		} else {
			rec = rec.effective(rev)
		}
	}
	x.recs[id] = &indexed{id: id, rev: rev, rec: rec}
	x.notifyLocked()
}

// damagedRecord marks id's record at rev unreadable: it is left out of every listing
// and reported once per revision, never a panic.
func (x *index) damagedRecord(id, key string, rev uint64, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.damaged[key] != rev {
		x.damaged[key] = rev
		x.log.Error("unreadable queue record skipped", "key", key, "revision", rev, "err", err)
	}
	x.applyLocked(id, rev, nil)
}

func (x *index) watchedUpTo(rev uint64) {
	x.mu.Lock()
	if rev > x.watched {
		x.watched = rev
		x.notifyLocked()
	}
	x.mu.Unlock()
}

func (x *index) notifyLocked() {
	close(x.changed)
	x.changed = make(chan struct{})
}

// waitWatched blocks until the watch has applied revision rev.
func (x *index) waitWatched(ctx context.Context, rev uint64) error {
	for {
		x.mu.Lock()
		done, ch := x.watched >= rev, x.changed
		x.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// get returns id's record and its revision (rec nil when absent).
func (x *index) get(id string) (*record, uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e, ok := x.recs[id]; ok {
		return e.rec, e.rev
	}
	return nil, 0
}

// jobs returns the running jobs (in slot order) and the pending ones in lease order:
// lowest number first, then push order.
func (x *index) jobs() (running, pending []*indexed) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.recs {
		if e.rec == nil || e.rec.Job == nil {
			continue
		}
		if e.rec.Job.Lease != nil {
			running = append(running, e)
		} else {
			pending = append(pending, e)
		}
	}
	slices.SortFunc(running, func(a, b *indexed) int { return cmp.Compare(a.rec.Job.Slot, b.rec.Job.Slot) })
	slices.SortFunc(pending, leaseOrder)
	return running, pending
}

func leaseOrder(a, b *indexed) int {
	if c := cmp.Compare(a.rec.Job.Item.Number, b.rec.Job.Item.Number); c != 0 {
		return c
	}
	return cmp.Compare(a.rec.Job.Slot, b.rec.Job.Slot)
}

// history returns the ids with a history entry in insertion order.
func (x *index) history() []*indexed {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*indexed
	for _, e := range x.recs {
		if e.rec != nil && e.rec.History != nil {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *indexed) int { return cmp.Compare(a.rec.History.Seq, b.rec.History.Seq) })
	return out
}

// boundTo returns the running job whose lease is the token at stream sequence seq.
func (x *index) boundTo(seq uint64) *indexed {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.recs {
		if e.rec != nil && e.rec.Job != nil && e.rec.Job.Lease != nil && e.rec.Job.Lease.Token == seq {
			return e
		}
	}
	return nil
}

// leasedBy returns the running jobs whose lease names worker.
func (x *index) leasedBy(worker string) []*indexed {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*indexed
	for _, e := range x.recs {
		if e.rec != nil && e.rec.Job != nil && e.rec.Job.Lease != nil && e.rec.Job.Lease.Worker == worker {
			out = append(out, e)
		}
	}
	return out
}
