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

	"github.com/forgeflow/forgeflow/graph"
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
	// ProgressInterval is the shortest time between two progress_state events of a
	// prompt; 0 means DefaultProgressInterval. See progressState.
	ProgressInterval time.Duration
	// MaxImagePixels is passed to nodes (nodes.Env.MaxImagePixels, --max-image-pixels).
	MaxImagePixels int64
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

	progressInterval time.Duration
	maxImagePixels   int64

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

		progressInterval: opts.ProgressInterval,
		maxImagePixels:   opts.MaxImagePixels,
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

// Publish hands ev to the engine's subscribers as if the engine had produced it. A
// cluster front relays the events of prompts that other processes run this way, so
// the server and the CLI follow them through Subscribe as they follow local ones.
func (e *Engine) Publish(ev Event) { e.hub.publish(ev) }

// Queue returns the queue the engine runs from (Options.Queue), or nil.
func (e *Engine) Queue() Queue { return e.queue }

// sensitiveExtraData are the extra_data keys ComfyUI keeps out of /queue and /history
// (execution.py SENSITIVE_EXTRA_DATA_KEYS): Submit moves them to Job.Sensitive.
var sensitiveExtraData = []string{"auth_token_comfy_org", "api_key_comfy_org"}

// CreateTimeKey is the extra_data key Submit stores the submit time under (Unix
// milliseconds), which /queue, /history and the jobs API report.
const CreateTimeKey = "create_time"

// Submitted is what Submit reports about a queued prompt.
type Submitted struct {
	Number float64
	// NodeErrors are the errors of output nodes that failed validation while others
	// remain (ComfyUI answers them with its 200); empty when every output validated.
	NodeErrors map[string]*graph.NodeErrors
}

// Submit validates job.Prompt (Validate, restricted to job.Outputs when set: ComfyUI's
// partial_execution_targets), sets job.Outputs to the outputs that validated, moves
// the extra_data keys ComfyUI keeps out of listings (auth_token_comfy_org,
// api_key_comfy_org) from job.ExtraData to job.Sensitive, sets extra_data's
// create_time (CreateTimeKey: the submit time in Unix milliseconds, replacing any the
// client sent, as ComfyUI's POST /prompt does), queues the job (see Queue.Push) and
// broadcasts the new queue status. An empty job.ID is set to a new
// random UUID, as ComfyUI does when the client gives no prompt_id.
//
// A prompt that fails validation is a *Rejection; an id already pending or running
// is ErrDuplicate. When Submit returns nil the job is stored durably.
func (e *Engine) Submit(ctx context.Context, job *Job, opts PushOptions) (Submitted, error) {
	if e.queue == nil {
		return Submitted{}, errors.New("executor: submit: no queue configured")
	}
	if job == nil {
		return Submitted{}, errors.New("executor: submit: nil job")
	}
	outputs, nodeErrors, err := Validate(e.reg, e.dirs, job.Prompt, job.Outputs)
	if err != nil {
		return Submitted{}, err
	}
	job.Outputs = outputs
	if job.ExtraData == nil {
		job.ExtraData = map[string]any{}
	}
	job.ExtraData[CreateTimeKey] = e.now().UnixMilli()
	for _, k := range sensitiveExtraData {
		v, ok := job.ExtraData[k]
		if !ok {
			continue
		}
		if job.Sensitive == nil {
			job.Sensitive = map[string]any{}
		}
		job.Sensitive[k] = v
		delete(job.ExtraData, k)
	}
	if job.ID == "" {
		job.ID = NewPromptID()
	}
	n, err := e.queue.Push(ctx, job, opts)
	if err != nil {
		return Submitted{}, err
	}
	e.publishStatus(ctx)
	return Submitted{Number: n, NodeErrors: nodeErrors}, nil
}

// publishStatus broadcasts the queue's status (ComfyUI's queue_updated).
func (e *Engine) publishStatus(ctx context.Context) {
	n, err := e.queue.Remaining(context.WithoutCancel(ctx))
	if err != nil {
		e.log.Warn("queue status", "err", err)
		return
	}
	e.publish(Event{Type: EventStatus, Broadcast: true, Data: StatusData{Status: StatusInfo{ExecInfo: ExecInfo{QueueRemaining: n}}}})
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
	if e.queue == nil {
		return errors.New("executor: run: no queue configured")
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
		if err := e.queue.Ack(context.WithoutCancel(ctx), job.ID, entry); errors.Is(err, ErrNotLeased) {
			// A clustered queue gave the prompt to another worker (this one stopped
			// heartbeating); that run's result is the one recorded.
			e.log.Warn("prompt's lease was lost; this run's result is dropped", "prompt_id", job.ID, "err", err)
		} else if err != nil {
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
