package executor

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/forgeflow/forgeflow/graph"
)

// Job is one queued prompt: ComfyUI's queue item
// (number, prompt_id, prompt, extra_data, outputs_to_execute).
//
// It marshals to JSON as ComfyUI's five-element list
// [number, prompt_id, prompt, extra_data, outputs], the form /queue and /history carry.
type Job struct {
	// Number orders the queue: lower runs first. The store assigns it on Push; a
	// front push gets the negated counter, as ComfyUI's POST /prompt with "front": true.
	Number float64
	// ID is the prompt_id: the client's UUID or one generated on submit.
	ID     string
	Prompt graph.Prompt
	// ExtraData is the request's extra_data with client_id folded in
	// (client_id, extra_pnginfo, ...).
	ExtraData map[string]any
	// Outputs are the ids of the output nodes to execute (validation's outputs list).
	Outputs []string
	// Sensitive holds extra_data keys ComfyUI keeps out of listings and history
	// (auth_token_comfy_org, api_key_comfy_org). It is stored with a pending job so that
	// it survives a restart, but never appears in Job's JSON form.
	Sensitive map[string]any
	// Attempts counts how many times the job was leased; the store uses it to decide
	// what to do with a job that was running when the process died.
	Attempts int
}

// ClientID returns extra_data.client_id, the websocket client execution events go to;
// "" when the prompt has none.
func (j *Job) ClientID() string {
	if j == nil || j.ExtraData == nil {
		return ""
	}
	s, _ := j.ExtraData["client_id"].(string)
	return s
}

// ExtraPNGInfo returns extra_data.extra_pnginfo, or nil.
func (j *Job) ExtraPNGInfo() map[string]any {
	if j == nil || j.ExtraData == nil {
		return nil
	}
	m, _ := j.ExtraData["extra_pnginfo"].(map[string]any)
	return m
}

// MarshalJSON writes the job as ComfyUI's queue item list.
func (j Job) MarshalJSON() ([]byte, error) {
	extra := j.ExtraData
	if extra == nil {
		extra = map[string]any{}
	}
	outs := j.Outputs
	if outs == nil {
		outs = []string{}
	}
	prompt := j.Prompt
	if prompt == nil {
		prompt = graph.Prompt{}
	}
	return json.Marshal([]any{j.Number, j.ID, prompt, extra, outs})
}

// UnmarshalJSON reads ComfyUI's queue item list (five or six elements; a sixth, the
// sensitive dict, is ignored).
func (j *Job) UnmarshalJSON(b []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return fmt.Errorf("executor: queue item: %w", err)
	}
	if len(parts) < 5 {
		return fmt.Errorf("executor: queue item: want 5 elements, got %d", len(parts))
	}
	var out Job
	if err := json.Unmarshal(parts[0], &out.Number); err != nil {
		return fmt.Errorf("executor: queue item: number: %w", err)
	}
	if err := json.Unmarshal(parts[1], &out.ID); err != nil {
		return fmt.Errorf("executor: queue item: prompt_id: %w", err)
	}
	if err := decodeUseNumber(parts[2], &out.Prompt); err != nil {
		return fmt.Errorf("executor: queue item: prompt: %w", err)
	}
	if err := decodeUseNumber(parts[3], &out.ExtraData); err != nil {
		return fmt.Errorf("executor: queue item: extra_data: %w", err)
	}
	if err := json.Unmarshal(parts[4], &out.Outputs); err != nil {
		return fmt.Errorf("executor: queue item: outputs: %w", err)
	}
	*j = out
	return nil
}

// HistoryEntry is one /history item for a finished prompt.
type HistoryEntry struct {
	Prompt Job `json:"prompt"`
	// Outputs maps an output node's id to its UI output (nodes.Result.UI), merged over
	// list items as ComfyUI does.
	Outputs map[string]map[string]any `json:"outputs"`
	Status  Status                    `json:"status"`
	Meta    map[string]NodeMeta       `json:"meta"`
}

// ErrorEntry is the history entry of a prompt that ended for a reason outside its
// nodes: no outputs, status error, and one execution_error message with exceptionType
// and message (the engine's "HistoryError" when its real entry could not be stored, a
// queue's ExceptionProcessStopped when it retires a prompt). Sensitive data is left out.
func ErrorEntry(job *Job, exceptionType, message string, now time.Time) *HistoryEntry {
	j := *job
	j.Sensitive = nil
	return &HistoryEntry{
		Prompt:  j,
		Outputs: map[string]map[string]any{},
		Status: Status{StatusStr: StatusError, Messages: []Message{{
			Event: EventExecutionError,
			Data: ExecutionErrorData{
				PromptID: job.ID, Executed: []string{},
				ExceptionMessage: message,
				ExceptionType:    exceptionType,
				Traceback:        []string{}, CurrentInputs: map[string][]any{}, CurrentOutputs: []string{},
				Timestamp: now.UnixMilli(),
			},
		}}},
		Meta: map[string]NodeMeta{},
	}
}

// Status is a history entry's "status" object.
type Status struct {
	StatusStr string    `json:"status_str"` // "success" or "error"
	Completed bool      `json:"completed"`
	Messages  []Message `json:"messages"`
}

// Status strings of a history entry.
const (
	StatusSuccess = "success"
	StatusError   = "error"
)

// Message is one [event_name, data] pair of a history status: the execution events
// (execution_start, execution_cached, execution_success, execution_error,
// execution_interrupted) the prompt produced.
type Message struct {
	Event string
	Data  any
}

// MarshalJSON writes the message as ComfyUI's two-element list.
func (m Message) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{m.Event, m.Data})
}

// UnmarshalJSON reads a [event_name, data] list; data is decoded generically.
func (m *Message) UnmarshalJSON(b []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return fmt.Errorf("executor: status message: %w", err)
	}
	if len(parts) != 2 {
		return fmt.Errorf("executor: status message: want 2 elements, got %d", len(parts))
	}
	if err := json.Unmarshal(parts[0], &m.Event); err != nil {
		return fmt.Errorf("executor: status message: event: %w", err)
	}
	var data any
	if err := decodeUseNumber(parts[1], &data); err != nil {
		return fmt.Errorf("executor: status message: data: %w", err)
	}
	m.Data = data
	return nil
}

// NodeMeta is a history entry's per-node "meta" object.
type NodeMeta struct {
	NodeID      string  `json:"node_id"`
	DisplayNode string  `json:"display_node"`
	ParentNode  *string `json:"parent_node"`
	RealNodeID  string  `json:"real_node_id"`
}
