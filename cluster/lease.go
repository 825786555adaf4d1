package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// held is a lease this process holds: the delivered token and the lease's
// generation, which a commit must still find in the job record.
type held struct {
	id, gen  string
	msg      jetstream.Msg
	activity atomic.Int64 // Unix ns of the prompt's last event
	done     chan struct{}
	stopOnce sync.Once

	mu    sync.Mutex
	files []outputFile // output files the run made, published or to publish
}

func (h *held) stop() { h.stopOnce.Do(func() { close(h.done) }) }

// touch records progress of the prompt: its heartbeats go on.
func (h *held) touch() { h.activity.Store(time.Now().UnixNano()) }

// routeDelay is how long a token that this worker cannot use waits before it is
// offered again (to another worker, or this one when nothing changed).
const routeDelay = 250 * time.Millisecond

// Lease implements executor.Queue: it waits for a token and binds it to the lowest
// pending job this worker can run (see peers.canRun), expiring first the lease the
// token belonged to if it was redelivered.
func (q *Queue) Lease(ctx context.Context) (*executor.Job, error) {
	wait := 50 * time.Millisecond
	for {
		if err := q.live(); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msg, err := q.nextToken(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := q.live(); err != nil {
				return nil, err
			}
			q.log.Warn("fetch lease token", "err", err)
			select {
			case <-ctx.Done():
			case <-q.ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		wait = 50 * time.Millisecond
		if msg == nil {
			continue
		}
		job, err := q.bind(ctx, msg)
		if err != nil {
			if ctx.Err() == nil && q.live() == nil {
				q.log.Warn("bind lease token", "err", err)
			}
			_ = msg.Nak()
			continue
		}
		if job != nil {
			return job, nil
		}
	}
}

// nextToken fetches one token, or nil after a few seconds without one.
func (q *Queue) nextToken(ctx context.Context) (jetstream.Msg, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stop := context.AfterFunc(q.ctx, cancel)
	defer stop()
	batch, err := q.cons.Fetch(1, jetstream.FetchContext(c))
	if err != nil {
		if c.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	for msg := range batch.Messages() {
		return msg, nil
	}
	if err := batch.Error(); err != nil && c.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return nil, nil
}

// bind binds the token msg to a job. It returns nil (and disposes of the token) when
// there is nothing this worker should run.
func (q *Queue) bind(ctx context.Context, msg jetstream.Msg) (*executor.Job, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return nil, err
	}
	seq := meta.Sequence.Stream
	q.dropHeld(seq)
	if e := q.idx.boundTo(seq); e != nil {
		// The token was redelivered: whoever held it stopped heartbeating.
		q.expire(ctx, e.id, seq)
	}
	// Workers take jobs in the same order, so a view that lags the cluster offers the
	// jobs others just took: catch up first, and again after losing a race.
	q.sync(ctx)
	for range 50 {
		_, pending := q.idx.jobs()
		cand, deferred := q.peers.choose(pending)
		if cand == nil {
			if deferred {
				return nil, msg.NakWithDelay(routeDelay)
			}
			// More tokens than jobs (a deleted job's token, a reconcile): drop it.
			return nil, msg.Ack()
		}
		gen := newGen()
		jp := *cand.rec.Job
		jp.Attempts++
		jp.Lease = &lease{Worker: q.opts.Name, Token: seq, Reply: msg.Reply(), Gen: gen, Since: time.Now().UnixMilli()}
		rec := &record{Job: &jp, History: cand.rec.History}
		_, err := q.write(ctx, cand.id, cand.rev, rec, func(r *record) bool {
			return r.Job != nil && r.Job.Lease != nil && r.Job.Lease.Gen == gen
		})
		if errors.Is(err, errConflict) {
			if _, _, err := q.read(ctx, cand.id); err != nil {
				return nil, err
			}
			q.sync(ctx)
			continue
		}
		if err != nil {
			return nil, err
		}
		q.hold(cand.id, gen, msg)
		q.fetchInputs(ctx, cand.id, jp.Inputs)
		job := jp.Item
		job.Sensitive = jp.Sensitive
		job.Attempts = jp.Attempts
		return &job, nil
	}
	return nil, errors.New("cluster: lease: the queue changed under every try")
}

// expire ends a lease that lapsed (its token at stream sequence seq was redelivered,
// or this process restarted under the lease's name): the job is pending again in its
// slot, its attempt counted, or retired with an error entry after MaxAttempts.
func (q *Queue) expire(ctx context.Context, id string, seq uint64) {
	var gen string
	done, err := q.update(ctx, id, func(r *record) (*record, bool) {
		if r == nil || r.Job == nil || r.Job.Lease == nil || r.Job.Lease.Token != seq {
			return nil, false // finished, handed back or taken over meanwhile
		}
		gen = r.Job.Lease.Gen
		if r.Job.Attempts >= q.opts.MaxAttempts {
			q.log.Warn("prompt lost its worker too often; recorded as failed", "prompt_id", id, "attempts", r.Job.Attempts, "last_worker", r.Job.Lease.Worker)
			b, err := historyJSON(retiredEntry(r.Job))
			if err != nil {
				return nil, false
			}
			next := &record{History: &histPart{Entry: b}}
			if r.History != nil {
				next.History.Seq = r.History.Seq
			}
			return next, true
		}
		q.log.Info("prompt's lease lapsed; queued again", "prompt_id", id, "worker", r.Job.Lease.Worker, "attempts", r.Job.Attempts)
		jp := *r.Job
		jp.Lease = nil
		return &record{Job: &jp, History: r.History}, true
	})
	if err != nil {
		q.log.Warn("expire lease", "prompt_id", id, "err", err)
	}
	if done {
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			q.sweepOutputs(id, gen)
		}()
	}
}

// retiredEntry is the history entry of a job whose leases lapsed MaxAttempts times.
func retiredEntry(jp *jobPart) *executor.HistoryEntry {
	msg := fmt.Sprintf("the worker running this prompt stopped or hung (%d attempts; last on %s)", jp.Attempts, jp.Lease.Worker)
	j := jp.Item
	return executor.ErrorEntry(&j, executor.ExceptionProcessStopped, msg, time.Now())
}

// hold records a lease and heartbeats its token until it ends: AckProgress every
// third of the lease timeout while the prompt shows progress (an executor event
// within HangTimeout). When the index shows the job taken over, onLost is told.
func (q *Queue) hold(id, gen string, msg jetstream.Msg) {
	h := &held{id: id, gen: gen, msg: msg, done: make(chan struct{})}
	h.touch()
	q.heldMu.Lock()
	q.held[id] = h
	q.heldMu.Unlock()
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		t := time.NewTicker(q.opts.LeaseTimeout / 3)
		defer t.Stop()
		warned := false
		for {
			select {
			case <-h.done:
				return
			case <-q.ctx.Done():
				return
			case <-t.C:
			}
			if rec, _ := q.idx.get(id); rec == nil || rec.Job == nil || rec.Job.Lease == nil || rec.Job.Lease.Gen != gen {
				q.log.Warn("lease lost: another worker took the prompt", "prompt_id", id)
				q.lose(h)
				return
			}
			idle := time.Since(time.Unix(0, h.activity.Load()))
			if q.opts.HangTimeout > 0 && idle > q.opts.HangTimeout {
				if !warned {
					q.log.Warn("prompt shows no progress; no more heartbeats, its lease will lapse", "prompt_id", id, "idle", idle.Round(time.Second))
					warned = true
				}
				continue
			}
			if err := msg.InProgress(); err != nil {
				q.log.Debug("lease heartbeat", "prompt_id", id, "err", err)
			}
		}
	}()
}

// holding returns the lease this process holds on id, or nil.
func (q *Queue) holding(id string) *held {
	q.heldMu.Lock()
	defer q.heldMu.Unlock()
	return q.held[id]
}

// release forgets a lease.
func (q *Queue) release(h *held) {
	h.stop()
	q.heldMu.Lock()
	if q.held[h.id] == h {
		delete(q.held, h.id)
	}
	q.heldMu.Unlock()
}

// lose forgets a lease another worker took over, discards what the run published and
// tells the worker to stop the run.
func (q *Queue) lose(h *held) {
	q.release(h)
	q.discardOutputs(h)
	if q.onLost != nil {
		q.onLost(h.id)
	}
}

// dropHeld forgets a lease whose token (stream sequence seq) came back to this
// process: the lease lapsed.
func (q *Queue) dropHeld(seq uint64) {
	q.heldMu.Lock()
	var lost *held
	for _, h := range q.held {
		if m, err := h.msg.Metadata(); err == nil && m.Sequence.Stream == seq {
			lost = h
		}
	}
	q.heldMu.Unlock()
	if lost != nil {
		q.lose(lost)
	}
}

// Ack implements executor.Queue: the entry (with the run's output files published,
// for a worker) replaces the job in one compare-and-set on the record that still
// holds this lease, so of two runs of one prompt (a lease that lapsed while the first
// still ran) exactly one commits; the other gets ErrNotLeased and its files are
// removed. Only the process holding the lease may ack it.
func (q *Queue) Ack(ctx context.Context, id string, entry *executor.HistoryEntry) error {
	if err := q.live(); err != nil {
		return err
	}
	h := q.holding(id)
	if h == nil {
		return fmt.Errorf("cluster: ack %q: %w", id, executor.ErrNotLeased)
	}
	if entry == nil || entry.Prompt.ID != id {
		return fmt.Errorf("cluster: ack %q: the history entry is not that prompt's", id)
	}
	cur, rev, err := q.read(ctx, id)
	if err != nil {
		return err
	}
	if cur == nil || cur.Job == nil || cur.Job.Lease == nil || cur.Job.Lease.Gen != h.gen {
		q.lose(h)
		return fmt.Errorf("cluster: ack %q: lease lost to another worker: %w", id, executor.ErrNotLeased)
	}
	e := *entry
	if err := q.publishOutputs(ctx, h, &e); err != nil {
		return err
	}
	b, err := historyJSON(&e)
	if err != nil {
		return err
	}
	next := &record{History: &histPart{Entry: b, By: h.gen}}
	if cur.History != nil {
		next.History.Seq = cur.History.Seq
	}
	_, err = q.write(ctx, id, rev, next, func(r *record) bool { return r.History != nil && r.History.By == h.gen })
	if errors.Is(err, errConflict) {
		q.lose(h)
		return fmt.Errorf("cluster: ack %q: lease lost to another worker: %w", id, executor.ErrNotLeased)
	}
	if err != nil {
		return err
	}
	q.release(h)
	if err := q.retry(ctx, func(c context.Context) error { return h.msg.DoubleAck(c) }); err != nil {
		// The token comes back after the lease timeout and is dropped then.
		q.log.Warn("ack lease token", "prompt_id", id, "err", err)
	}
	return q.trimHistory(ctx)
}

// Fail implements executor.Queue: the job is pending again in its slot, the attempt
// not counted, its token offered again at once.
func (q *Queue) Fail(ctx context.Context, id string) error {
	if err := q.live(); err != nil {
		return err
	}
	h := q.holding(id)
	if h == nil {
		return fmt.Errorf("cluster: fail %q: %w", id, executor.ErrNotLeased)
	}
	cur, rev, err := q.read(ctx, id)
	if err != nil {
		return err
	}
	if cur == nil || cur.Job == nil || cur.Job.Lease == nil || cur.Job.Lease.Gen != h.gen {
		q.lose(h)
		return fmt.Errorf("cluster: fail %q: lease lost to another worker: %w", id, executor.ErrNotLeased)
	}
	jp := *cur.Job
	jp.Lease = nil
	jp.Attempts-- // a hand-back is not the prompt's fault
	_, err = q.write(ctx, id, rev, &record{Job: &jp, History: cur.History}, func(r *record) bool {
		return r.Job != nil && r.Job.Lease == nil && r.Job.Nonce == jp.Nonce && r.Job.Attempts == jp.Attempts
	})
	if errors.Is(err, errConflict) {
		q.lose(h)
		return fmt.Errorf("cluster: fail %q: lease lost to another worker: %w", id, executor.ErrNotLeased)
	}
	if err != nil {
		return err
	}
	q.release(h)
	q.discardOutputs(h)
	if err := h.msg.Nak(); err != nil {
		q.log.Warn("hand back lease token", "prompt_id", id, "err", err)
	}
	return nil
}

// reconcile gives every job a token: a push whose token publish failed (the process
// died between the two writes) would otherwise wait forever. Surplus tokens are
// harmless: a worker that finds no job for one drops it.
func (q *Queue) reconcile(ctx context.Context) error {
	q.sync(ctx)
	running, pending := q.idx.jobs()
	jobs := len(running) + len(pending)
	if jobs == 0 {
		return nil
	}
	info, err := q.cons.Info(ctx)
	if err != nil {
		return err
	}
	tokens := int(info.NumPending) + info.NumAckPending
	if tokens >= jobs {
		q.deficit = false
		return nil
	}
	// A push between its record and its token looks the same for a moment: act on
	// a shortfall seen twice in a row.
	if !q.deficit {
		q.deficit = true
		return nil
	}
	q.deficit = false
	q.log.Info("queued prompts without lease tokens; adding tokens", "jobs", jobs, "tokens", tokens)
	q.idx.mu.Lock()
	mark := q.idx.watched
	q.idx.mu.Unlock()
	for i := range jobs - tokens {
		if err := q.publishToken(ctx, fmt.Sprintf("topup-%d-%d", mark, i)); err != nil {
			return err
		}
	}
	return nil
}
