package executor

import (
	"github.com/forgeflow/forgeflow/nodes"
)

// Websocket event names, as ComfyUI sends them.
const (
	EventStatus               = "status"
	EventExecutionStart       = "execution_start"
	EventExecutionCached      = "execution_cached"
	EventExecuting            = "executing"
	EventProgress             = "progress"
	EventProgressState        = "progress_state"
	EventExecuted             = "executed"
	EventExecutionSuccess     = "execution_success"
	EventExecutionError       = "execution_error"
	EventExecutionInterrupted = "execution_interrupted"
	// EventPreview is a binary preview frame; Event.Preview carries it and Data is nil.
	// The server encodes it as ComfyUI's binary message type 1 or 4.
	EventPreview = "preview"
)

// Event is one message for websocket clients (and in-process watchers such as the CLI).
//
// Targeting follows ComfyUI: when ClientID is set, only that client gets the event;
// when ClientID is empty and Broadcast is set, every client gets it; when both are
// empty the event goes to no websocket client (ComfyUI sends execution_start,
// execution_cached, execution_success, execution_error and execution_interrupted only
// to the prompt's client), but in-process subscribers still see it.
type Event struct {
	Type      string
	ClientID  string
	Broadcast bool
	// Data is the JSON "data" object: one of the *Data types below.
	Data any
	// Preview is set for EventPreview only.
	Preview *PreviewFrame
}

// StatusData is the "status" event: {status: {exec_info: {queue_remaining}}}.
// The server adds "sid" when it greets a new client.
type StatusData struct {
	Status StatusInfo `json:"status"`
}

// StatusInfo is the inner object of StatusData.
type StatusInfo struct {
	ExecInfo ExecInfo `json:"exec_info"`
}

// ExecInfo reports the number of prompts pending or running.
type ExecInfo struct {
	QueueRemaining int `json:"queue_remaining"`
}

// ExecutionStartData is the "execution_start" event. Timestamp is Unix milliseconds.
type ExecutionStartData struct {
	PromptID  string `json:"prompt_id"`
	Timestamp int64  `json:"timestamp"`
}

// ExecutionCachedData is the "execution_cached" event: the planned nodes whose outputs
// came from the cache.
type ExecutionCachedData struct {
	Nodes     []string `json:"nodes"`
	PromptID  string   `json:"prompt_id"`
	Timestamp int64    `json:"timestamp"`
}

// ExecutingData is the "executing" event; Node and DisplayNode are nil when the prompt
// has finished, and the JSON is then {"node": null, "prompt_id"} as ComfyUI's.
type ExecutingData struct {
	Node        *string `json:"node"`
	DisplayNode *string `json:"display_node,omitempty"`
	PromptID    string  `json:"prompt_id"`
}

// ProgressData is the "progress" event of a node reporting steps.
type ProgressData struct {
	Value    int    `json:"value"`
	Max      int    `json:"max"`
	PromptID string `json:"prompt_id"`
	Node     string `json:"node"`
}

// ProgressStateData is the "progress_state" event: every node of the prompt that has
// started, with its state.
type ProgressStateData struct {
	PromptID string                  `json:"prompt_id"`
	Nodes    map[string]NodeProgress `json:"nodes"`
}

// Node progress states of ProgressStateData.
const (
	NodeRunning  = "running"
	NodeFinished = "finished"
	NodeError    = "error"
)

// NodeProgress is one node's entry of ProgressStateData.
type NodeProgress struct {
	Value         float64 `json:"value"`
	Max           float64 `json:"max"`
	State         string  `json:"state"`
	NodeID        string  `json:"node_id"`
	PromptID      string  `json:"prompt_id"`
	DisplayNodeID string  `json:"display_node_id"`
	ParentNodeID  *string `json:"parent_node_id"`
	RealNodeID    string  `json:"real_node_id"`
}

// ExecutedData is the "executed" event of a node with a UI output.
type ExecutedData struct {
	Node        string         `json:"node"`
	DisplayNode string         `json:"display_node"`
	Output      map[string]any `json:"output"`
	PromptID    string         `json:"prompt_id"`
}

// ExecutionSuccessData is the "execution_success" event.
type ExecutionSuccessData struct {
	PromptID  string `json:"prompt_id"`
	Timestamp int64  `json:"timestamp"`
}

// ExecutionErrorData is the "execution_error" event. CurrentInputs maps each input name
// of the failing node to its values (one per list item) summarised as ComfyUI's
// format_value does: numbers, strings, booleans and null as they are, anything else as
// a short description. CurrentOutputs lists the node ids whose outputs are cached.
type ExecutionErrorData struct {
	PromptID         string           `json:"prompt_id"`
	NodeID           string           `json:"node_id"`
	NodeType         string           `json:"node_type"`
	Executed         []string         `json:"executed"`
	ExceptionMessage string           `json:"exception_message"`
	ExceptionType    string           `json:"exception_type"`
	Traceback        []string         `json:"traceback"`
	CurrentInputs    map[string][]any `json:"current_inputs"`
	CurrentOutputs   []string         `json:"current_outputs"`
	Timestamp        int64            `json:"timestamp"`
}

// ExecutionInterruptedData is the "execution_interrupted" event.
type ExecutionInterruptedData struct {
	PromptID  string   `json:"prompt_id"`
	NodeID    string   `json:"node_id"`
	NodeType  string   `json:"node_type"`
	Executed  []string `json:"executed"`
	Timestamp int64    `json:"timestamp"`
}

// PreviewFrame is a preview image sent by a running node, with the ids ComfyUI's
// binary message type 4 (PREVIEW_IMAGE_WITH_METADATA) carries.
type PreviewFrame struct {
	Image         nodes.PreviewImage
	PromptID      string
	NodeID        string
	DisplayNodeID string
	ParentNodeID  *string
	RealNodeID    string
}
