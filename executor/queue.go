package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
)

// Queue is the job queue the engine pulls from. Implementations must be safe for
// concurrent use. executor/store implements it on bbolt; a distributed implementation
// (a broker with leases) can replace it without changing the engine.
//
// Ordering: Lease returns the pending job with the lowest Number (ties: first pushed).
// Durability: Push returns only once the job is stored durably, so a job whose push
// returned nil is never lost. A job is pending until leased, running until Ack or Fail.
type Queue interface {
	// Push stores job as pending. It assigns job.Number from the queue's counter (the
	// negated counter when front is set, so it sorts before every pending job) unless
	// opts.Number is set, and returns the number given. An empty job.ID is an error;
	// an ID already pending or running is ErrDuplicate.
	Push(ctx context.Context, job *Job, opts PushOptions) (float64, error)
	// Lease marks the next pending job running and returns it. It blocks until a job
	// is pending or ctx is done (then it returns ctx.Err()).
	Lease(ctx context.Context) (*Job, error)
	// Ack completes a running job: it leaves the queue and entry becomes its history
	// item, in one durable write. Both successful and failed prompts are acked; the
	// failure is recorded in entry.Status.
	Ack(ctx context.Context, id string, entry *HistoryEntry) error
	// Fail hands a running job back without a result (the worker is shutting down):
	// it becomes pending again with its number, so it runs first on the next lease.
	Fail(ctx context.Context, id string) error
	// Delete removes the given pending jobs (ids not pending are ignored) and returns
	// how many it removed. A running job is not deleted; interrupt it instead.
	Delete(ctx context.Context, ids ...string) (int, error)
	// Clear removes every pending job.
	Clear(ctx context.Context) error
	// List returns the running jobs and the pending jobs, pending in lease order.
	List(ctx context.Context) (running, pending []*Job, err error)
	// Pending returns how many jobs are pending or running: ComfyUI's queue_remaining.
	Pending(ctx context.Context) (int, error)

	History
	Close() error
}

// History stores finished prompts, oldest first, as ComfyUI's /history does.
type History interface {
	// PutHistory stores the entry for entry.Prompt.ID; an existing entry with that id
	// is replaced in place (it keeps its position, as a Python dict does).
	PutHistory(ctx context.Context, entry *HistoryEntry) error
	// GetHistory returns one entry, or ErrNotFound.
	GetHistory(ctx context.Context, id string) (*HistoryEntry, error)
	// ListHistory returns entries in insertion order with ComfyUI's paging
	// (PromptQueue.get_history): maxItems < 0 means no limit and offset < 0 means
	// none given. With a limit and no offset it returns the last maxItems entries;
	// otherwise the entries from offset on, at most maxItems of them.
	ListHistory(ctx context.Context, maxItems, offset int) ([]*HistoryEntry, error)
	// DeleteHistory removes the given entries; unknown ids are ignored.
	DeleteHistory(ctx context.Context, ids ...string) error
	// ClearHistory removes every entry.
	ClearHistory(ctx context.Context) error
}

// PushOptions says where a job goes in the queue.
type PushOptions struct {
	// Front puts the job before every pending job (ComfyUI's "front": true).
	Front bool
	// Number, when not nil, is used as the job's number as given (ComfyUI's "number"
	// field of POST /prompt); Front is then ignored.
	Number *float64
}

// Errors a Queue returns; check with errors.Is.
var (
	ErrNotFound  = errors.New("executor: prompt not found")
	ErrDuplicate = errors.New("executor: prompt id already queued")
	ErrClosed    = errors.New("executor: queue closed")
	ErrNotLeased = errors.New("executor: prompt is not running")
)

// decodeUseNumber decodes JSON keeping numbers as json.Number, as graph.Prompt expects.
func decodeUseNumber(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}
