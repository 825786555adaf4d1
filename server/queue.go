package server

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/forgeflow/forgeflow/graph"
)

// Queue is the executor as the server sees it: ComfyUI's PromptQueue plus validation.
// cmd/forgeflow adapts the executor to it; tests use a fake. Methods are called from
// many request goroutines at once and must be safe for concurrent use.
type Queue interface {
	// Submit validates and queues a prompt. A prompt that fails validation returns a
	// *Rejection (the 400 answer of POST /prompt); any other error is a 500.
	Submit(ctx context.Context, req PromptRequest) (Submitted, error)
	// Items returns the running and pending entries in ComfyUI's queue order, each as
	// its JSON tuple [number, prompt_id, prompt, extra_data, outputs_to_execute].
	Items(ctx context.Context) (running, pending []json.RawMessage, err error)
	// Remaining is the number of running plus pending prompts (exec_info.queue_remaining).
	Remaining() int
	// Clear drops every pending prompt; Delete drops the pending prompts with these ids.
	Clear(ctx context.Context) error
	Delete(ctx context.Context, promptIDs []string) error
	// Interrupt stops the running prompt: any prompt when promptID is "", otherwise
	// only if promptID is the one running.
	Interrupt(promptID string)
	// History returns finished prompts, oldest first: at most maxItems (all when < 0)
	// starting at offset (ComfyUI's rule: a negative offset with maxItems set means the
	// last maxItems entries).
	History(ctx context.Context, maxItems, offset int) ([]HistoryEntry, error)
	// HistoryItem returns one finished prompt; ok is false when it is unknown.
	HistoryItem(ctx context.Context, promptID string) (entry HistoryEntry, ok bool, err error)
	ClearHistory(ctx context.Context) error
	DeleteHistory(ctx context.Context, promptIDs []string) error
}

// PromptRequest is a POST /prompt body after the server's checks.
type PromptRequest struct {
	PromptID string
	Prompt   graph.Prompt
	// Number is the explicit queue position ("number"); nil lets the queue choose,
	// at the front when Front is set.
	Number *float64
	Front  bool
	// ClientID is "client_id": the websocket client that receives the prompt's events.
	ClientID string
	// ExtraData is "extra_data" with client_id added, as ComfyUI stores it.
	ExtraData map[string]any
	// PartialExecutionTargets restricts the run to these output nodes (nil: all).
	PartialExecutionTargets []string
}

// Submitted is the answer to an accepted prompt.
type Submitted struct {
	Number float64
	// NodeErrors are errors of outputs that were dropped while others remain valid;
	// ComfyUI answers them with the 200 (usually {}).
	NodeErrors json.RawMessage
}

// Rejection is a prompt that failed validation: ComfyUI's 400 answer
// {"error": {type, message, details, extra_info}, "node_errors": {...}}.
type Rejection struct {
	Err        json.RawMessage // the "error" object
	NodeErrors json.RawMessage // the "node_errors" object
}

func (r *Rejection) Error() string {
	var e struct {
		Message string `json:"message"`
		Details string `json:"details"`
	}
	_ = json.Unmarshal(r.Err, &e)
	return "server: prompt rejected: " + e.Message + ": " + e.Details
}

// HistoryEntry is one finished prompt; Data is its history object
// ({"prompt": [...], "outputs": {...}, "status": {...}, "meta": {...}}) verbatim.
type HistoryEntry struct {
	PromptID string
	Data     json.RawMessage
}

// errNoQueue answers queue routes of a server built without a queue.
var errNoQueue = errors.New("server: no queue configured")
