package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// Options configure a Queue.
type Options struct {
	// Name identifies this process in the cluster (a worker's leases, its output
	// subfolder, its routing advertisement). Names must be unique among live
	// processes; a process restarting under its old name takes back its leases at
	// once instead of after LeaseTimeout. Required.
	Name string
	// Prefix names the streams, buckets and subjects, so several forgeflow
	// installations can share one NATS account; empty means "forgeflow".
	Prefix string
	// Replicas of every stream and bucket; 0 means 3 when the cluster has at least
	// three servers, else 1.
	Replicas int
	// MaxAttempts and MaxHistory are executor.Queue's options (0: the defaults).
	MaxAttempts int
	MaxHistory  int
	// LeaseTimeout is the token consumer's ack wait: a worker that neither
	// heartbeats nor acks for this long loses its prompt to another worker. 0 means
	// DefaultLeaseTimeout. It is a property of the cluster: the last worker to open
	// with a different value sets it.
	LeaseTimeout time.Duration
	// HangTimeout: a running prompt that reports no progress (no executor event)
	// for this long stops being heartbeated, so its lease lapses and another worker
	// takes it. 0 means DefaultHangTimeout; negative never.
	HangTimeout time.Duration
	// RetryFor bounds how long a write keeps retrying while the cluster cannot
	// answer (a leader election); 0 means one minute.
	RetryFor time.Duration
	// InputDir is the input folder (uploads, LoadImage's files). A process that
	// pushes publishes the files a prompt names there with the prompt; a worker
	// writes them into its own InputDir before it runs the prompt (inputs.go).
	// Empty: a front ships nothing; a worker uses its engine's input folder.
	InputDir string
	// Requires lists the model files a job names, for routing; nil means Requires.
	Requires func(*executor.Job) []string
	Logger   *slog.Logger
}

// Defaults of Options.
const (
	DefaultPrefix       = "forgeflow"
	DefaultLeaseTimeout = 30 * time.Second
	DefaultHangTimeout  = 10 * time.Minute
)

// Queue is executor.Queue on NATS JetStream. Jobs and history live in one KV bucket
// (one key per prompt id, changed only by compare-and-set), and every pushed job
// puts a token on a work-queue stream whose one durable pull consumer all workers
// share: a worker leases by fetching a token and binding it to the lowest pending
// job it can run; the token's ack deadline is the lease, heartbeated with
// AckProgress while the prompt runs and redelivered to another worker when the
// holder dies or hangs. codex/scale-out.md has the whole design.
type Queue struct {
	opts  Options
	log   *slog.Logger
	nc    *nats.Conn
	ownNC bool
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	cons  jetstream.Consumer
	names names
	idx   *index
	peers *peers
	objs  jetstream.ObjectStore
	// inputs holds the input files prompts name, by content (inputs.go).
	inputs jetstream.ObjectStore
	// workersKV holds the workers' adverts (routing).
	workersKV jetstream.KeyValue

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	counterMu sync.Mutex
	heldMu    sync.Mutex
	held      map[string]*held
	outputs   *outputDirs // set for workers: where their engine writes outputs
	deficit   bool        // the last reconcile found fewer tokens than jobs (worker's maintain loop only)
	onLost    func(id string)
}

// names are the JetStream names under a prefix.
type names struct {
	queueKV, workersKV, outputs, inputs, tokens, tokenSubject, consumer, events, interrupt string
}

func namesFor(prefix string) names {
	return names{
		queueKV:      prefix + "_queue",
		workersKV:    prefix + "_workers",
		outputs:      prefix + "_outputs",
		inputs:       prefix + "_inputs",
		tokens:       prefix + "_tokens",
		tokenSubject: prefix + ".tokens",
		consumer:     "workers",
		events:       prefix + ".events",
		interrupt:    prefix + ".interrupt",
	}
}

// errConflict is a compare-and-set that lost to another write.
var errConflict = errors.New("cluster: record changed by another process")

// read returns id's record as stored now (nil when absent) and its revision, and
// puts it in the index.
func (q *Queue) read(ctx context.Context, id string) (*record, uint64, error) {
	key := jobKey(id)
	var e jetstream.KeyValueEntry
	err := q.retry(ctx, func(ctx context.Context) error {
		var err error
		e, err = q.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			e, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: read %q: %w", id, err)
	}
	if e == nil {
		return nil, 0, nil
	}
	rec, derr := decodeRecord(e.Value())
	if derr != nil {
		q.idx.damagedRecord(id, key, e.Revision(), derr)
		return nil, 0, fmt.Errorf("cluster: prompt %q: unreadable record at revision %d: %w", id, e.Revision(), derr)
	}
	q.idx.apply(id, e.Revision(), rec)
	return rec.effective(e.Revision()), e.Revision(), nil
}

// write stores rec under id's key if the key is still at revision rev (0: absent),
// retrying while the cluster cannot answer. When an answer was lost and the retry
// finds the key changed, mine says whether the value there is this write's. It
// returns errConflict when another write came first.
func (q *Queue) write(ctx context.Context, id string, rev uint64, rec *record, mine func(*record) bool) (uint64, error) {
	key := jobKey(id)
	var b []byte
	if !rec.empty() {
		var err error
		if b, err = encodeRecord(rec); err != nil {
			return 0, err
		}
		if max := q.nc.MaxPayload(); int64(len(b))+1024 > max {
			return 0, fmt.Errorf("cluster: prompt %q: %d bytes stored, more than the cluster's max_payload (%d bytes) allows", id, len(b), max)
		}
	}
	var newRev uint64
	tries := 0
	err := q.retry(ctx, func(ctx context.Context) error {
		tries++
		var err error
		switch {
		case rec.empty():
			err = q.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		case rev == 0:
			newRev, err = q.kv.Create(ctx, key, b)
		default:
			newRev, err = q.kv.Update(ctx, key, b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return errConflict
		}
		return err
	})
	if errors.Is(err, errConflict) && tries > 1 && mine != nil {
		cur, curRev, rerr := q.read(ctx, id)
		if rerr == nil && ((cur == nil && rec.empty()) || (cur != nil && mine(cur))) {
			return curRev, nil
		}
	}
	if err != nil {
		if !errors.Is(err, errConflict) {
			err = fmt.Errorf("cluster: write %q: %w", id, err)
		}
		return 0, err
	}
	if rec.empty() {
		// A delete's revision is not returned; the watch brings it.
		q.idx.apply(id, rev+1, nil)
		return 0, nil
	}
	q.idx.apply(id, newRev, rec)
	return newRev, nil
}

// retry runs op until it succeeds, fails for good (a conflict, a closed queue, ctx
// done) or RetryFor has passed while the cluster could not answer.
func (q *Queue) retry(ctx context.Context, op func(context.Context) error) error {
	deadline := time.Now().Add(q.opts.RetryFor)
	wait := 50 * time.Millisecond
	for {
		if err := q.live(); err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := op(c)
		cancel()
		if err == nil || errors.Is(err, errConflict) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil && !errors.Is(err, errConflict) {
				return ctx.Err()
			}
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		q.log.Debug("cluster busy; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.ctx.Done():
			return q.live()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

func newGen() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Push implements executor.Queue. The job is on a quorum of the cluster before Push
// returns; a retried write (an answer lost in a leader election) is recognised by
// the push's nonce, and its token is published with a Nats-Msg-Id, so a prompt id is
// queued once.
func (q *Queue) Push(ctx context.Context, job *executor.Job, opts executor.PushOptions) (float64, error) {
	if err := q.live(); err != nil {
		return 0, err
	}
	if job == nil || job.ID == "" {
		return 0, errors.New("cluster: push: empty prompt id")
	}
	if len(job.ID) > executor.MaxIDLength {
		return 0, fmt.Errorf("cluster: push: prompt id of %d bytes: %w", len(job.ID), executor.ErrInvalidID)
	}
	if opts.Number != nil && (math.IsNaN(*opts.Number) || math.IsInf(*opts.Number, 0)) {
		return 0, fmt.Errorf("cluster: push %q: number is not finite", job.ID)
	}
	cur, rev, err := q.read(ctx, job.ID)
	if err != nil {
		return 0, err
	}
	if cur != nil && cur.Job != nil {
		return 0, fmt.Errorf("cluster: push %q: %w", job.ID, executor.ErrDuplicate)
	}
	var number float64
	if opts.Number != nil {
		// ComfyUI uses a client-given number as is and leaves its counter alone.
		number = *opts.Number
	} else {
		n, err := q.nextNumber(ctx)
		if err != nil {
			return 0, err
		}
		number = float64(int64(n))
		if opts.Front && n != 0 {
			number = -number
		}
	}
	inputs, err := q.publishInputs(ctx, job)
	if err != nil {
		return 0, err
	}
	item := *job
	item.Number, item.Sensitive, item.Attempts = number, nil, 0
	jp := &jobPart{Item: item, Sensitive: job.Sensitive, Requires: q.opts.Requires(job), Inputs: inputs, Pushed: time.Now().UnixMilli(), Nonce: newGen()}
	mine := func(r *record) bool { return r.Job != nil && r.Job.Nonce == jp.Nonce }
	for {
		rec := &record{Job: jp}
		if cur != nil {
			rec.History = cur.History
		}
		newRev, err := q.write(ctx, job.ID, rev, rec, mine)
		if err == nil {
			rev = newRev
			break
		}
		if !errors.Is(err, errConflict) {
			return 0, err
		}
		if cur, rev, err = q.read(ctx, job.ID); err != nil {
			return 0, err
		}
		if cur != nil && cur.Job != nil {
			return 0, fmt.Errorf("cluster: push %q: %w", job.ID, executor.ErrDuplicate)
		}
	}
	if err := q.publishToken(ctx, job.ID+"@"+strconv.FormatUint(rev, 10)); err != nil {
		// The job is stored; the next reconcile gives it a token.
		q.log.Warn("queued prompt without a lease token yet", "prompt_id", job.ID, "err", err)
	}
	job.Number = number
	q.announceStatus()
	return number, nil
}

// announceStatus tells the clients of every front how many prompts remain: a front's
// engine broadcasts the status after a change only to its own clients. The count is
// this process's index, which holds its own write already: no second round trip to
// the cluster beside the one the engine's own status makes (Remaining).
func (q *Queue) announceStatus() {
	r, p := q.idx.jobs()
	n := len(r) + len(p)
	ev := executor.Event{Type: executor.EventStatus, Broadcast: true, Data: executor.StatusData{Status: executor.StatusInfo{ExecInfo: executor.ExecInfo{QueueRemaining: n}}}}
	if err := q.PublishEvent(ev); err != nil {
		q.log.Debug("publish status", "err", err)
	}
}

// nextNumber takes the next value of the cluster-wide counter.
func (q *Queue) nextNumber(ctx context.Context) (uint64, error) {
	q.counterMu.Lock()
	defer q.counterMu.Unlock()
	for {
		var n, rev uint64
		err := q.retry(ctx, func(ctx context.Context) error {
			e, err := q.kv.Get(ctx, keyCounter)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
				n, rev = 0, 0
				return nil
			case err != nil:
				return err
			}
			rev = e.Revision()
			n, err = strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				q.log.Error("unreadable prompt counter; starting again from the revision", "value", string(e.Value()))
				n = rev
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("cluster: prompt counter: %w", err)
		}
		next := []byte(strconv.FormatUint(n+1, 10))
		err = q.retry(ctx, func(ctx context.Context) error {
			var err error
			if rev == 0 {
				_, err = q.kv.Create(ctx, keyCounter, next)
			} else {
				_, err = q.kv.Update(ctx, keyCounter, next, rev)
			}
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return errConflict
			}
			return err
		})
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, errConflict) {
			return 0, fmt.Errorf("cluster: prompt counter: %w", err)
		}
	}
}

// publishToken puts one lease token on the token stream; msgID dedups a retry.
func (q *Queue) publishToken(ctx context.Context, msgID string) error {
	return q.retry(ctx, func(ctx context.Context) error {
		_, err := q.js.Publish(ctx, q.names.tokenSubject, nil, jetstream.WithMsgID(msgID))
		return err
	})
}

// Delete implements executor.Queue.
func (q *Queue) Delete(ctx context.Context, ids ...string) (int, error) {
	if err := q.live(); err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		ok, err := q.update(ctx, id, func(r *record) (*record, bool) {
			if r == nil || r.Job == nil || r.Job.Lease != nil {
				return nil, false
			}
			return &record{History: r.History}, true
		})
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	if n > 0 {
		q.announceStatus()
	}
	return n, nil
}

// update applies change to id's current record with compare-and-set until it
// sticks; change reports false to leave the record alone.
func (q *Queue) update(ctx context.Context, id string, change func(*record) (*record, bool)) (bool, error) {
	for {
		cur, rev, err := q.read(ctx, id)
		if err != nil {
			return false, err
		}
		next, ok := change(cur)
		if !ok {
			return false, nil
		}
		if cur.empty() && next.empty() {
			return true, nil
		}
		_, err = q.write(ctx, id, rev, next, nil)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, errConflict) {
			return false, err
		}
	}
}

// Clear implements executor.Queue.
func (q *Queue) Clear(ctx context.Context) error {
	if err := q.live(); err != nil {
		return err
	}
	q.sync(ctx)
	_, pending := q.idx.jobs()
	ids := make([]string, 0, len(pending))
	for _, e := range pending {
		ids = append(ids, e.id)
	}
	_, err := q.Delete(ctx, ids...)
	return err
}

// List implements executor.Queue. Pending jobs that some worker refuses carry the
// reasons in extra_data.forgeflow_routing (see codex/scale-out.md).
func (q *Queue) List(ctx context.Context) (running, pending []*executor.Job, err error) {
	if err := q.live(); err != nil {
		return nil, nil, err
	}
	q.sync(ctx)
	r, p := q.idx.jobs()
	running = make([]*executor.Job, 0, len(r))
	for _, e := range r {
		running = append(running, publicJob(e.rec.Job))
	}
	pending = make([]*executor.Job, 0, len(p))
	for _, e := range p {
		j := publicJob(e.rec.Job)
		if why := q.peers.refusals(e.rec.Job.Requires); why != nil {
			extra := make(map[string]any, len(j.ExtraData)+1)
			for k, v := range j.ExtraData {
				extra[k] = v
			}
			extra["forgeflow_routing"] = why
			j.ExtraData = extra
		}
		pending = append(pending, j)
	}
	return running, pending, nil
}

func publicJob(jp *jobPart) *executor.Job {
	j := jp.Item
	j.Sensitive = nil
	j.Attempts = jp.Attempts
	return &j
}

// Remaining implements executor.Queue.
func (q *Queue) Remaining(ctx context.Context) (int, error) {
	if err := q.live(); err != nil {
		return 0, err
	}
	q.sync(ctx)
	r, p := q.idx.jobs()
	return len(r) + len(p), nil
}

// PutHistory implements executor.Queue.
func (q *Queue) PutHistory(ctx context.Context, entry *executor.HistoryEntry) error {
	if err := q.live(); err != nil {
		return err
	}
	if entry == nil || entry.Prompt.ID == "" {
		return errors.New("cluster: history: entry without a prompt id")
	}
	b, err := historyJSON(entry)
	if err != nil {
		return err
	}
	if _, err := q.update(ctx, entry.Prompt.ID, func(r *record) (*record, bool) {
		next := &record{History: &histPart{Entry: b}}
		if r != nil {
			next.Job = r.Job
			if r.History != nil {
				next.History.Seq = r.History.Seq // replaced in place
			}
		}
		return next, true
	}); err != nil {
		return err
	}
	return q.trimHistory(ctx)
}

// historyJSON encodes an entry without its sensitive data.
func historyJSON(entry *executor.HistoryEntry) ([]byte, error) {
	e := *entry
	e.Prompt.Sensitive = nil
	b, err := json.Marshal(&e)
	if err != nil {
		return nil, fmt.Errorf("cluster: history %q: encode: %w", entry.Prompt.ID, err)
	}
	return b, nil
}

// trimHistory drops the oldest entries beyond MaxHistory (ComfyUI's
// MAXIMUM_HISTORY_SIZE).
func (q *Queue) trimHistory(ctx context.Context) error {
	h := q.idx.history()
	for _, e := range h[:max(0, len(h)-q.opts.MaxHistory)] {
		if err := q.DeleteHistory(ctx, e.id); err != nil {
			return err
		}
	}
	return nil
}

// GetHistory implements executor.Queue.
func (q *Queue) GetHistory(ctx context.Context, id string) (*executor.HistoryEntry, error) {
	if err := q.live(); err != nil {
		return nil, err
	}
	q.sync(ctx)
	rec, rev := q.idx.get(id)
	if rec == nil || rec.History == nil {
		return nil, fmt.Errorf("cluster: history %q: %w", id, executor.ErrNotFound)
	}
	e, err := decodeEntry(rec.History.Entry)
	if err != nil {
		q.idx.damagedRecord(id, jobKey(id), rev, err)
		return nil, fmt.Errorf("cluster: history %q: unreadable entry: %w", id, err)
	}
	return e, nil
}

// ListHistory implements executor.Queue with ComfyUI's paging. An unreadable entry is
// left out (and reported once in the log).
func (q *Queue) ListHistory(ctx context.Context, maxItems, offset int) ([]*executor.HistoryEntry, error) {
	if err := q.live(); err != nil {
		return nil, err
	}
	q.sync(ctx)
	h := q.idx.history()
	if offset < 0 && maxItems >= 0 {
		offset = len(h) - maxItems
	}
	offset = max(offset, 0)
	out := []*executor.HistoryEntry{}
	if maxItems == 0 || offset >= len(h) {
		return out, nil
	}
	for _, ie := range h[offset:] {
		e, err := decodeEntry(ie.rec.History.Entry)
		if err != nil {
			q.idx.damagedRecord(ie.id, jobKey(ie.id), ie.rev, err)
			continue
		}
		out = append(out, e)
		if maxItems > 0 && len(out) >= maxItems {
			break
		}
	}
	return out, nil
}

// DeleteHistory implements executor.Queue.
func (q *Queue) DeleteHistory(ctx context.Context, ids ...string) error {
	if err := q.live(); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := q.update(ctx, id, func(r *record) (*record, bool) {
			if r == nil || r.History == nil {
				return nil, false
			}
			return &record{Job: r.Job}, true
		}); err != nil {
			return err
		}
	}
	return nil
}

// ClearHistory implements executor.Queue.
func (q *Queue) ClearHistory(ctx context.Context) error {
	if err := q.live(); err != nil {
		return err
	}
	q.sync(ctx)
	h := q.idx.history()
	ids := make([]string, 0, len(h))
	for _, e := range h {
		ids = append(ids, e.id)
	}
	return q.DeleteHistory(ctx, ids...)
}

var _ executor.Queue = (*Queue)(nil)
