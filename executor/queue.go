package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
)

// Queue is the durable prompt queue and its history: the engine leases prompts from it
// and acks them into the history; the server reads it for /queue and /history and
// deletes from it. executor/store implements it on one bbolt file; a clustered
// implementation (a broker such as NATS JetStream) implements the same contract, and
// every implementation runs the conformance suite executor/queuetest, so the two cannot
// drift. The contract follows ComfyUI's PromptQueue (execution.py) and POST /prompt.
//
// Ids. A job's ID is a non-empty string of at most MaxIDLength bytes; Push refuses
// others (a longer one with ErrInvalidID), so that an id is always a valid key for
// every implementation.
//
// Concurrency and durability. Every method is safe for concurrent use. A method that
// returned nil has made its change durable: it survives the process stopping at any
// later moment. After Close every method returns an error wrapping ErrClosed.
//
// States. A job is pending (pushed, waiting), running (leased, until Ack or Fail) or
// finished (acked: out of the queue, its entry in the history). An id is unique among
// the pending and running jobs; a finished or deleted id may be pushed again.
//
// Order and numbers. Lease hands out the pending job with the lowest Number; equal
// numbers go in push order. Push numbers a job from a counter that starts at 0 on a new
// queue, grows by one per Push that takes a number from it, and survives restarts:
// the job gets the counter's value, or its negation with PushOptions.Front (so every
// front job runs before the others, a later front job first); an explicit
// PushOptions.Number is used as given and leaves the counter alone. These are ComfyUI's
// "front" and "number" of POST /prompt.
//
// Leases, restarts and crashes. A lease belongs to the process that took it and lasts
// until Ack or Fail, or until that process stops. Close does not hand leased jobs back:
// to the queue, a job running at Close is a job whose process died during its run. Its
// lease expires, at the latest when the queue is opened again on the same state (the
// same file, the same stream and worker name): the job is pending again in its old slot
// (same Number, same place among equal numbers), so it runs again (at-least-once: a
// pushed prompt is never lost). Each Lease counts an attempt (Job.Attempts); Fail
// takes back the attempt of its lease, since a hand-back is not the prompt's fault.
// When an expired lease was the job's MaxAttempts-th (an option of the implementation,
// DefaultMaxAttempts unless set), the job is retired instead: it leaves the queue and
// its history entry is an error (an execution_error message with exception_type
// "ProcessStopped"), so a prompt that crashes the process cannot crash it forever.
// Everything else survives a restart unchanged: the pending jobs and their order, the
// counter, the history and its order.
//
// Sensitive data. Job.Sensitive is stored with a pending or running job and given back
// by Lease; List never returns it, and history entries never hold it.
//
// History. Entries keep insertion order; storing an id that is already there replaces
// its entry in place. The history holds at most MaxHistory entries (an implementation
// option, DefaultMaxHistory unless set); beyond that the oldest go first.
type Queue interface {
	// Push stores job as pending and returns the number it got (also set in
	// job.Number), as the type's comment describes. An empty job.ID or a number that
	// is not finite is an error, an ID longer than MaxIDLength is ErrInvalidID; an ID
	// already pending or running is ErrDuplicate.
	Push(ctx context.Context, job *Job, opts PushOptions) (float64, error)
	// Lease marks the next pending job running and returns it, with its Sensitive
	// data and Attempts. It blocks until a job is pending, ctx is done (it returns
	// ctx.Err()) or the queue is closed (ErrClosed).
	Lease(ctx context.Context) (*Job, error)
	// Ack finishes the running job id: it leaves the queue and entry (whose
	// Prompt.ID is id) becomes its history entry, in one atomic durable write. Both
	// successful and failed prompts are acked; entry.Status says which. A job that is
	// not running is ErrNotLeased.
	Ack(ctx context.Context, id string, entry *HistoryEntry) error
	// Fail hands the running job id back without a result (the worker is stopping):
	// it is pending again in its old slot, so it runs first among the jobs pushed
	// after it, and the attempt does not count. A job that is not running is
	// ErrNotLeased.
	Fail(ctx context.Context, id string) error
	// Delete removes the pending jobs with these ids and returns how many it removed;
	// ids that are running, finished or unknown are ignored (interrupt a running
	// prompt instead).
	Delete(ctx context.Context, ids ...string) (int, error)
	// Clear removes every pending job; running jobs and the history stay.
	Clear(ctx context.Context) error
	// List returns the running jobs and the pending jobs, pending in lease order,
	// without their Sensitive data.
	List(ctx context.Context) (running, pending []*Job, err error)
	// Remaining returns how many jobs are pending or running: ComfyUI's
	// queue_remaining.
	Remaining(ctx context.Context) (int, error)

	// PutHistory stores entry under entry.Prompt.ID, as the type's comment describes.
	PutHistory(ctx context.Context, entry *HistoryEntry) error
	// GetHistory returns one entry, or an error wrapping ErrNotFound.
	GetHistory(ctx context.Context, id string) (*HistoryEntry, error)
	// ListHistory returns entries in insertion order with ComfyUI's paging
	// (PromptQueue.get_history): maxItems < 0 means no limit and offset < 0 means
	// none given. With a limit and no offset it returns the last maxItems entries;
	// otherwise the entries from offset on, at most maxItems of them.
	ListHistory(ctx context.Context, maxItems, offset int) ([]*HistoryEntry, error)
	// DeleteHistory removes the entries with these ids; unknown ids are ignored.
	DeleteHistory(ctx context.Context, ids ...string) error
	// ClearHistory removes every entry.
	ClearHistory(ctx context.Context) error

	// Close releases the queue; see the type's comment for the jobs running then. A
	// blocked Lease returns ErrClosed. Closing twice is not an error.
	Close() error
}

// PushOptions says where a job goes in the queue.
type PushOptions struct {
	// Front puts the job before every pending job (ComfyUI's "front": true).
	Front bool
	// Number, when not nil, is used as the job's number as given (ComfyUI's "number"
	// field of POST /prompt); Front is then ignored.
	Number *float64
}

// Defaults of a Queue implementation's options.
const (
	// DefaultMaxHistory is ComfyUI's MAXIMUM_HISTORY_SIZE.
	DefaultMaxHistory = 10000
	// DefaultMaxAttempts is how many leases of a job may expire (the process died
	// during its run) before the job is retired as failed.
	DefaultMaxAttempts = 2
)

// MaxIDLength bounds a prompt id (bytes): ComfyUI's are 36-character UUIDs, and the
// server refuses longer prompt_id and client_id values with 400.
const MaxIDLength = 256

// Errors a Queue returns; check with errors.Is.
var (
	ErrNotFound  = errors.New("executor: prompt not found")
	ErrDuplicate = errors.New("executor: prompt id already queued")
	ErrInvalidID = errors.New("executor: prompt id too long")
	ErrClosed    = errors.New("executor: queue closed")
	ErrNotLeased = errors.New("executor: prompt is not running")
)

// ExceptionProcessStopped is the exception_type of the history entry of a job retired
// after its leases expired MaxAttempts times.
const ExceptionProcessStopped = "ProcessStopped"

// decodeUseNumber decodes JSON keeping numbers as json.Number, as graph.Prompt expects.
func decodeUseNumber(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}
