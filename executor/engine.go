package executor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forgeflow/forgeflow/nodes"
)

// CacheMode selects how node outputs are kept between prompts, as ComfyUI's flags do.
type CacheMode int

const (
	// CacheClassic keeps the outputs of the last prompt's nodes (ComfyUI's default).
	CacheClassic CacheMode = iota
	// CacheLRU keeps up to Options.Cache.LRUSize outputs, least recently used evicted
	// first (--cache-lru N).
	CacheLRU
	// CacheNone keeps nothing between prompts (--cache-none).
	CacheNone
)

// CacheOptions configures the output cache.
type CacheOptions struct {
	Mode CacheMode
	// LRUSize is the number of node outputs CacheLRU keeps; it must be positive.
	LRUSize int
	// AvailableRAM reports the system's available memory in bytes. When set together
	// with MinFreeRAM, the engine evicts cached outputs (least recently used first)
	// before each node while available memory is below MinFreeRAM, as ComfyUI's
	// RAM-pressure cache does. The executor cannot measure memory itself: it must not
	// know what its outputs hold. A reader that fails is taken as no pressure.
	AvailableRAM func() (uint64, error)
	MinFreeRAM   uint64
}

// Options configures an Engine. Registry is required; Queue is required for Run and
// Submit (Execute works without one). The zero value of every other field works.
type Options struct {
	Registry *nodes.Registry
	Queue    Queue
	Dirs     nodes.Dirs
	Logger   *slog.Logger
	Cache    CacheOptions
	// DisableMetadata is passed to nodes (--disable-metadata).
	DisableMetadata bool
	// SubscriberBacklog bounds each subscriber's undelivered events; 0 means
	// DefaultSubscriberBacklog. See Subscription for the drop policy.
	SubscriberBacklog int
	// Now returns the current time for event timestamps; nil means time.Now.
	Now func() time.Time
}

// Engine runs prompts one at a time from its Queue and reports events. Create it with
// New, start its worker with Run, and feed it with Submit. It is safe for concurrent use.
type Engine struct {
	reg    *nodes.Registry
	queue  Queue
	dirs   nodes.Dirs
	log    *slog.Logger
	noMeta bool
	now    func() time.Time
	hub    *hub

	// runMu serialises prompt execution (Run's worker and Execute); worker is set
	// while Run runs, so that a second Run is refused rather than lease a job it
	// would only hold.
	runMu  sync.Mutex
	worker atomic.Bool
	cache  *outputCache

	mu      sync.Mutex
	running *runningPrompt // the prompt being executed, or nil
}

// runningPrompt is what Interrupt needs to know about the prompt being executed.
type runningPrompt struct {
	id     string
	cancel context.CancelCauseFunc
}

// errInterrupted is the cancel cause Interrupt sets; nodes may read it with
// context.Cause.
var errInterrupted = errors.New("executor: interrupted")

// New returns an engine. It fails when Registry is nil or the cache options are invalid.
func New(opts Options) (*Engine, error) {
	if opts.Registry == nil {
		return nil, errors.New("executor: new: nil registry")
	}
	c, err := newOutputCache(opts.Cache)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		reg:    opts.Registry,
		queue:  opts.Queue,
		dirs:   opts.Dirs,
		log:    opts.Logger,
		noMeta: opts.DisableMetadata,
		now:    opts.Now,
		hub:    newHub(opts.SubscriberBacklog),
		cache:  c,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	return e, nil
}

// Subscribe returns a subscription to every event the engine publishes from now on.
// Close it when done.
func (e *Engine) Subscribe() *Subscription { return e.hub.subscribe() }

func (e *Engine) publish(ev Event) { e.hub.publish(ev) }

func (e *Engine) needQueue() error {
	if e.queue == nil {
		return errors.New("executor: no queue configured")
	}
	return nil
}

// Submit queues job (see Queue.Push) and broadcasts the new queue status. When it
// returns nil the job is stored durably. An empty job.ID is set to a new random UUID,
// as ComfyUI does when the client gives no prompt_id.
func (e *Engine) Submit(ctx context.Context, job *Job, opts PushOptions) (float64, error) {
	if err := e.needQueue(); err != nil {
		return 0, err
	}
	if job == nil {
		return 0, errors.New("executor: submit: nil job")
	}
	if job.ID == "" {
		job.ID = NewPromptID()
	}
	n, err := e.queue.Push(ctx, job, opts)
	if err != nil {
		return 0, err
	}
	e.publishStatus(ctx)
	return n, nil
}

// QueueRemaining returns the number of prompts pending or running.
func (e *Engine) QueueRemaining(ctx context.Context) (int, error) {
	if err := e.needQueue(); err != nil {
		return 0, err
	}
	return e.queue.Remaining(ctx)
}

// StatusEvent returns the current "status" event data, for the server's greeting to a
// new websocket client.
func (e *Engine) StatusEvent(ctx context.Context) (StatusData, error) {
	n, err := e.QueueRemaining(ctx)
	return StatusData{Status: StatusInfo{ExecInfo: ExecInfo{QueueRemaining: n}}}, err
}

func (e *Engine) publishStatus(ctx context.Context) {
	if e.queue == nil {
		return
	}
	st, err := e.StatusEvent(context.WithoutCancel(ctx))
	if err != nil {
		e.log.Warn("queue status", "err", err)
		return
	}
	e.publish(Event{Type: EventStatus, Broadcast: true, Data: st})
}

// ListQueue returns the running and pending jobs (GET /queue).
func (e *Engine) ListQueue(ctx context.Context) (running, pending []*Job, err error) {
	if err := e.needQueue(); err != nil {
		return nil, nil, err
	}
	return e.queue.List(ctx)
}

// DeleteQueued removes pending jobs by id (POST /queue {"delete": [...]}) and
// broadcasts the new status. A running prompt is not affected.
func (e *Engine) DeleteQueued(ctx context.Context, ids ...string) (int, error) {
	if err := e.needQueue(); err != nil {
		return 0, err
	}
	n, err := e.queue.Delete(ctx, ids...)
	if err == nil {
		e.publishStatus(ctx)
	}
	return n, err
}

// ClearQueue removes every pending job (POST /queue {"clear": true}) and broadcasts
// the new status. A running prompt is not affected.
func (e *Engine) ClearQueue(ctx context.Context) error {
	if err := e.needQueue(); err != nil {
		return err
	}
	err := e.queue.Clear(ctx)
	if err == nil {
		e.publishStatus(ctx)
	}
	return err
}

// History returns finished prompts oldest first with ComfyUI's paging (GET /history
// ?max_items=&offset=; see History.ListHistory). The server writes them as a JSON
// object keyed by prompt id, in this order.
func (e *Engine) History(ctx context.Context, maxItems, offset int) ([]*HistoryEntry, error) {
	if err := e.needQueue(); err != nil {
		return nil, err
	}
	return e.queue.ListHistory(ctx, maxItems, offset)
}

// HistoryItem returns one finished prompt (GET /history/{prompt_id}), or ErrNotFound.
func (e *Engine) HistoryItem(ctx context.Context, id string) (*HistoryEntry, error) {
	if err := e.needQueue(); err != nil {
		return nil, err
	}
	return e.queue.GetHistory(ctx, id)
}

// DeleteHistory removes history entries (POST /history {"delete": [...]}).
func (e *Engine) DeleteHistory(ctx context.Context, ids ...string) error {
	if err := e.needQueue(); err != nil {
		return err
	}
	return e.queue.DeleteHistory(ctx, ids...)
}

// ClearHistory removes every history entry (POST /history {"clear": true}).
func (e *Engine) ClearHistory(ctx context.Context) error {
	if err := e.needQueue(); err != nil {
		return err
	}
	return e.queue.ClearHistory(ctx)
}

// Interrupt cancels the running prompt (POST /interrupt). With promptID empty it
// interrupts whatever runs; otherwise only the prompt with that id, if it is the one
// running. It reports whether a prompt was interrupted. The prompt ends with
// execution_interrupted and an error history entry; the queue goes on.
func (e *Engine) Interrupt(promptID string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.running
	if r == nil || (promptID != "" && promptID != r.id) {
		return false
	}
	r.cancel(errInterrupted)
	return true
}

// Running returns the id of the prompt being executed, or "".
func (e *Engine) Running() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running == nil {
		return ""
	}
	return e.running.id
}

// FreeMemory drops every cached node output (POST /free {"free_memory": true}).
// Outputs of a prompt running now are kept until it ends.
func (e *Engine) FreeMemory() { e.cache.clear() }

// Run is the worker loop: it leases jobs from the queue and executes them one at a
// time until ctx is done. Only one Run may be active per engine. A prompt still running when ctx ends is cancelled and handed
// back to the queue (Queue.Fail), so it runs again after a restart. Run returns nil
// when ctx ends, or the queue's error.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.needQueue(); err != nil {
		return err
	}
	if !e.worker.CompareAndSwap(false, true) {
		return errors.New("executor: run: a worker is already running")
	}
	defer e.worker.Store(false)
	for {
		job, err := e.queue.Lease(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("executor: lease: %w", err)
		}
		entry, stopped := e.execute(ctx, job, true)
		if stopped {
			if err := e.queue.Fail(context.WithoutCancel(ctx), job.ID); err != nil {
				e.log.Error("hand back prompt", "prompt_id", job.ID, "err", err)
			}
			return nil
		}
		if err := e.queue.Ack(context.WithoutCancel(ctx), job.ID, entry); err != nil {
			// Do not leave the prompt "running": record it without its results.
			e.log.Error("record history", "prompt_id", job.ID, "err", err)
			if err := e.queue.Ack(context.WithoutCancel(ctx), job.ID, ErrorEntry(job, "HistoryError", "the history entry could not be stored: "+err.Error(), e.now())); err != nil {
				e.log.Error("record history without results", "prompt_id", job.ID, "err", err)
			}
		}
		e.publishStatus(ctx)
		e.publishDone(job)
	}
}

// Execute runs one prompt synchronously, outside the queue, and returns its history
// entry (the CLI's batch runner uses it). Events are published as for queued prompts.
// A failing node does not make Execute fail: the entry's Status says what happened.
// When ctx is cancelled the prompt stops and is reported as interrupted.
// An empty job.ID is set to a new random UUID.
func (e *Engine) Execute(ctx context.Context, job *Job) *HistoryEntry {
	if job.ID == "" {
		job.ID = NewPromptID()
	}
	entry, _ := e.execute(ctx, job, false)
	e.publishDone(job)
	return entry
}

// NewPromptID returns a random (version 4) UUID, the form of ComfyUI's prompt ids.
func NewPromptID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
