package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// errNoEngine answers prompt and queue routes of a server built without an engine.
var errNoEngine = errors.New("server: no engine configured")

// comfyError is ComfyUI's error object of a refused prompt.
type comfyError struct {
	Type      string         `json:"type"`
	Message   string         `json:"message"`
	Details   string         `json:"details"`
	ExtraInfo map[string]any `json:"extra_info"`
}

// promptAnswer is the 200 answer of POST /prompt.
type promptAnswer struct {
	PromptID   string                       `json:"prompt_id"`
	Number     float64                      `json:"number"`
	NodeErrors map[string]*graph.NodeErrors `json:"node_errors"`
}

// promptRequest is a POST /prompt body after the server's checks.
type promptRequest struct {
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

// promptRefusal is the 400 answer of POST /prompt.
type promptRefusal struct {
	Error      any `json:"error"`
	NodeErrors any `json:"node_errors"`
}

func (s *Server) promptRoutes() {
	s.route("GET /prompt", s.getPrompt)
	s.route("POST /prompt", s.postPrompt)
	s.route("GET /queue", s.getQueue)
	s.route("POST /queue", s.postQueue)
	s.route("POST /interrupt", s.postInterrupt)
}

func (s *Server) getPrompt(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.queueInfo(r.Context()))
}

// parsePromptRequest decodes a POST /prompt body: {prompt, client_id, extra_data, front,
// number, prompt_id, partial_execution_targets}. A false second result means the body
// had no prompt (ComfyUI's no_prompt error).
func parsePromptRequest(body map[string]json.RawMessage) (promptRequest, bool, error) {
	var req promptRequest
	if raw, ok := body["number"]; ok {
		n, err := jsonFloat(raw)
		if err != nil {
			return req, true, fmt.Errorf("number: %w", err)
		}
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return req, true, fmt.Errorf("number: %v is not a finite number", n)
		}
		req.Number = &n
	}
	if raw, ok := body["front"]; ok {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return req, true, fmt.Errorf("front: %w", err)
		}
		req.Front = truthy(v)
	}
	if raw, ok := body["prompt_id"]; ok && string(raw) != "null" {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return req, true, fmt.Errorf("prompt_id: %w", err)
		}
		req.PromptID = fmt.Sprint(v)
	}
	if raw, ok := body["client_id"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &req.ClientID); err != nil {
			return req, true, fmt.Errorf("client_id: want a string: %w", err)
		}
	}
	req.ExtraData = map[string]any{}
	if raw, ok := body["extra_data"]; ok && string(raw) != "null" {
		if err := decodeNumbers(raw, &req.ExtraData); err != nil {
			return req, true, fmt.Errorf("extra_data: want an object: %w", err)
		}
		if req.ExtraData == nil {
			req.ExtraData = map[string]any{}
		}
	}
	if _, ok := body["client_id"]; ok {
		req.ExtraData["client_id"] = req.ClientID
	}
	if raw, ok := body["partial_execution_targets"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &req.PartialExecutionTargets); err != nil {
			return req, true, fmt.Errorf("partial_execution_targets: want a list of node ids: %w", err)
		}
	}
	raw, ok := body["prompt"]
	if !ok {
		return req, false, nil
	}
	if err := decodeNumbers(raw, &req.Prompt); err != nil {
		return req, true, fmt.Errorf("prompt: want an object of nodes: %w", err)
	}
	for id, n := range req.Prompt {
		if n == nil {
			return req, true, fmt.Errorf("prompt: node %q is not an object", id)
		}
	}
	return req, true, nil
}

func (s *Server) postPrompt(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	out := s.submitPrompt(r.Context(), body, promptSource{usage: r.Header.Get(usageSourceHeader)})
	switch {
	case out.answer != nil:
		s.writeJSON(w, http.StatusOK, out.answer)
	case out.refusal != nil:
		s.writeJSON(w, out.status, out.refusal)
	default:
		s.writeJSON(w, out.status, out.err)
	}
}

// promptOutcome is what became of a POST /prompt body: the 200 answer, a refusal in
// ComfyUI's {"error": {...}, "node_errors": {...}} shape (400), or another error
// (400 for a body that is not an object, 500, 503) with the body HTTP answers.
type promptOutcome struct {
	status  int
	answer  *promptAnswer
	refusal any // promptRefusal or *executor.Rejection
	err     *apiError
}

func refused(typ, msg, details string) promptOutcome {
	return promptOutcome{status: http.StatusBadRequest, refusal: promptRefusal{
		Error:      comfyError{Type: typ, Message: msg, Details: details, ExtraInfo: map[string]any{}},
		NodeErrors: map[string]any{},
	}}
}

func failed(status int, msg, details string) promptOutcome {
	return promptOutcome{status: status, err: &apiError{Error: msg, Details: details}}
}

// usageSourceHeader names the client that queued a prompt (an app, an integration);
// current ComfyUI copies it into extra_data.comfy_usage_source unless the body set one.
const usageSourceHeader = "Comfy-Usage-Source"

// promptSource is what a prompt's transport adds to its body: clientID, when set,
// replaces the body's client_id (a websocket prompt's events go to the socket that
// sent it); usage is the Comfy-Usage-Source header of the request (or of the
// websocket's handshake).
type promptSource struct {
	clientID *string
	usage    string
}

// submitPrompt is the one path from a POST /prompt body to the queue, for HTTP and
// for the websocket's prompt messages: the body's checks, then Engine.Submit
// (validation and the durable push). ctx should outlive the client when the prompt
// must be queued whatever happens to it.
func (s *Server) submitPrompt(ctx context.Context, body map[string]json.RawMessage, from promptSource) promptOutcome {
	if body == nil {
		return failed(http.StatusBadRequest, "invalid JSON body", "want an object")
	}
	if from.clientID != nil {
		raw, _ := json.Marshal(*from.clientID)
		body["client_id"] = raw
	}
	req, hasPrompt, err := parsePromptRequest(body)
	if err != nil {
		return refused("invalid_prompt", "Invalid prompt", err.Error())
	}
	if _, set := req.ExtraData["comfy_usage_source"]; !set && from.usage != "" {
		req.ExtraData["comfy_usage_source"] = from.usage
	}
	if !hasPrompt {
		return refused("no_prompt", "No prompt provided", "No prompt provided")
	}
	if err := checkPromptID(body["prompt_id"]); err != nil {
		return refused("invalid_prompt_id", "prompt_id must be a valid UUID", err.Error())
	}
	if len(req.PromptID) > executor.MaxIDLength || len(req.ClientID) > executor.MaxIDLength {
		return refused("invalid_prompt", "Invalid prompt", fmt.Sprintf("prompt_id and client_id may hold at most %d bytes", executor.MaxIDLength))
	}
	if len(req.Prompt) > s.opts.MaxPromptNodes {
		return refused("invalid_prompt", "Prompt too large",
			fmt.Sprintf("the prompt has %d nodes; this server takes at most %d (forgeflow serve --max-prompt-nodes)", len(req.Prompt), s.opts.MaxPromptNodes))
	}
	for id, n := range req.Prompt {
		if n.ClassType == "" {
			return refused("invalid_prompt", "Cannot execute because a node is missing the class_type property.", fmt.Sprintf("Node ID '#%s'", id))
		}
	}
	if req.PromptID == "" {
		req.PromptID = executor.NewPromptID()
	}
	if s.engine == nil {
		return failed(http.StatusServiceUnavailable, errNoEngine.Error(), "")
	}
	job := &executor.Job{ID: req.PromptID, Prompt: req.Prompt, ExtraData: req.ExtraData, Outputs: req.PartialExecutionTargets}
	sub, err := s.engine.Submit(ctx, job, executor.PushOptions{Front: req.Front, Number: req.Number})
	var rej *executor.Rejection
	switch {
	case errors.As(err, &rej):
		s.log.Warn("invalid prompt", "prompt_id", req.PromptID, "err", rej.Error())
		return promptOutcome{status: http.StatusBadRequest, refusal: rej}
	case errors.Is(err, executor.ErrDuplicate):
		return refused("invalid_prompt", "Prompt id already queued", fmt.Sprintf("prompt_id %q is pending or running", req.PromptID))
	case err != nil:
		s.log.Error("queue prompt", "prompt_id", req.PromptID, "err", err)
		return failed(http.StatusInternalServerError, "cannot queue prompt", err.Error())
	}
	s.log.Info("got prompt", "prompt_id", req.PromptID)
	return promptOutcome{status: http.StatusOK, answer: &promptAnswer{PromptID: req.PromptID, Number: sub.Number, NodeErrors: sub.NodeErrors}}
}

// checkPromptID checks a client-chosen prompt_id: absent or null lets the server make
// one; anything else must be a UUID string in canonical form (lowercase, hyphenated),
// since the id is compared as it is everywhere after (history keys, events,
// interrupts), as ComfyUI's validate_job_id (comfy_execution/jobs.py) requires.
func checkPromptID(raw json.RawMessage) error {
	if raw == nil || string(raw) == "null" {
		return nil
	}
	var id string
	if err := json.Unmarshal(raw, &id); err != nil {
		return fmt.Errorf("prompt_id must be a string holding a UUID, got %s; leave it out to let the server choose one", truncate(string(raw), 64))
	}
	if !isCanonicalUUID(id) {
		return fmt.Errorf("prompt_id %q is not a UUID in canonical form (8-4-4-4-12 lowercase hex digits); leave it out to let the server choose one", truncate(id, 64))
	}
	return nil
}

// isCanonicalUUID reports whether s is a UUID as Python's str(uuid.UUID(...)) writes
// it: 36 characters, lowercase hex digits with hyphens after the 8th, 12th, 16th and
// 20th digit. Any version and variant is accepted.
func isCanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (s *Server) getQueue(w http.ResponseWriter, r *http.Request) {
	var running, pending []*executor.Job
	if s.queue != nil {
		var err error
		if running, pending, err = s.queue.List(r.Context()); err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot list queue", err.Error())
			return
		}
	}
	// Jobs marshal as ComfyUI's queue items [number, prompt_id, prompt, extra_data, outputs].
	s.writeJSON(w, http.StatusOK, map[string][]*executor.Job{"queue_running": nonNil(running), "queue_pending": nonNil(pending)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// clearDelete is the body of POST /queue and POST /history.
type clearDelete struct {
	Clear  any   `json:"clear"`
	Delete []any `json:"delete"`
}

func (cd clearDelete) ids() []string {
	out := make([]string, 0, len(cd.Delete))
	for _, v := range cd.Delete {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

func (s *Server) postQueue(w http.ResponseWriter, r *http.Request) {
	var body clearDelete
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	if status, e := s.changeQueue(r.Context(), body); e != nil {
		s.writeJSON(w, status, e)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// changeQueue applies a POST /queue body (for HTTP and the websocket's queue
// messages): {"clear": true} drops every pending prompt, {"delete": [ids]} those
// prompts; then the queue status is broadcast, as ComfyUI's queue_updated. On failure
// it returns the status and error to answer.
func (s *Server) changeQueue(ctx context.Context, body clearDelete) (int, *apiError) {
	acted, status, e := s.clearOrDelete(ctx, body, "queue", executor.Queue.Clear, func(q executor.Queue, ctx context.Context, ids ...string) error {
		_, err := q.Delete(ctx, ids...)
		return err
	})
	if e != nil {
		return status, e
	}
	if acted {
		s.queueUpdated(ctx) // ComfyUI's wipe_queue and delete_queue_item do
	}
	return http.StatusOK, nil
}

// clearOrDelete does the work of POST /queue and POST /history, which take the same
// body: {"clear": true} empties the list, {"delete": [ids]} drops those entries. It
// reports whether a clear or delete was asked for (acted), or the status and error to
// answer.
func (s *Server) clearOrDelete(ctx context.Context, body clearDelete, what string,
	clearAll func(executor.Queue, context.Context) error, del func(executor.Queue, context.Context, ...string) error) (acted bool, status int, e *apiError) {
	if s.queue == nil {
		return false, http.StatusServiceUnavailable, &apiError{Error: errNoEngine.Error()}
	}
	if truthy(body.Clear) {
		if err := clearAll(s.queue, ctx); err != nil {
			return false, http.StatusInternalServerError, &apiError{Error: "cannot clear " + what, Details: err.Error()}
		}
		acted = true
	}
	if len(body.Delete) > 0 {
		if err := del(s.queue, ctx, body.ids()...); err != nil {
			return false, http.StatusInternalServerError, &apiError{Error: "cannot delete from " + what, Details: err.Error()}
		}
		acted = true
	}
	return acted, http.StatusOK, nil
}

func (s *Server) postInterrupt(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, s.opts.MaxPromptSize)
	if !ok {
		return
	}
	s.interrupt(interruptTarget(body))
	w.WriteHeader(http.StatusOK)
}

// interrupt stops the prompt id, or whatever runs when id is "" (POST /interrupt and
// the websocket's interrupt message): through Options.Interrupt when set (a cluster
// front reaches every worker), else the engine.
func (s *Server) interrupt(id string) {
	switch {
	case s.opts.Interrupt != nil:
		s.log.Info("interrupt", "prompt_id", id)
		s.opts.Interrupt(id)
	case s.engine != nil:
		s.log.Info("interrupt", "prompt_id", id)
		s.engine.Interrupt(id)
	}
}

// interruptTarget is the prompt_id of a POST /interrupt body, or "" for a global
// interrupt: ComfyUI takes an empty or non-JSON body, or one without a prompt_id, as
// one.
func interruptTarget(body []byte) string {
	var req struct {
		PromptID any `json:"prompt_id"`
	}
	if json.Unmarshal(body, &req) != nil || req.PromptID == nil {
		return ""
	}
	return fmt.Sprint(req.PromptID)
}

// truthy is Python's truth value of a JSON value, as ComfyUI tests "front" and "clear".
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case json.Number:
		f, err := x.Float64()
		return err == nil && f != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// jsonFloat reads a JSON number or numeric string, as Python's float() accepts both.
func jsonFloat(raw json.RawMessage) (float64, error) {
	var v any
	if err := decodeNumbers(raw, &v); err != nil {
		return 0, err
	}
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case string:
		return strconv.ParseFloat(x, 64)
	}
	return 0, fmt.Errorf("want a number, got %s", raw)
}

// decodeNumbers decodes JSON keeping numbers as json.Number, so 64-bit seeds keep
// every digit.
func decodeNumbers(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}
