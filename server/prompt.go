package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// comfyError is ComfyUI's error object of a refused prompt.
type comfyError struct {
	Type      string         `json:"type"`
	Message   string         `json:"message"`
	Details   string         `json:"details"`
	ExtraInfo map[string]any `json:"extra_info"`
}

// promptAnswer is the 200 answer of POST /prompt.
type promptAnswer struct {
	PromptID   string          `json:"prompt_id"`
	Number     float64         `json:"number"`
	NodeErrors json.RawMessage `json:"node_errors"`
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
	s.writeJSON(w, http.StatusOK, s.queueInfo())
}

func (s *Server) refusePrompt(w http.ResponseWriter, typ, msg, details string) {
	s.writeJSON(w, http.StatusBadRequest, promptRefusal{
		Error:      comfyError{Type: typ, Message: msg, Details: details, ExtraInfo: map[string]any{}},
		NodeErrors: map[string]any{},
	})
}

// parsePromptRequest decodes a POST /prompt body: {prompt, client_id, extra_data, front,
// number, prompt_id, partial_execution_targets}. A false second result means the body
// had no prompt (ComfyUI's no_prompt error).
func parsePromptRequest(body map[string]json.RawMessage) (PromptRequest, bool, error) {
	var req PromptRequest
	if raw, ok := body["number"]; ok {
		n, err := jsonFloat(raw)
		if err != nil {
			return req, true, fmt.Errorf("number: %w", err)
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
	if body == nil {
		s.writeError(w, http.StatusBadRequest, "invalid JSON body", "want an object")
		return
	}
	req, hasPrompt, err := parsePromptRequest(body)
	if err != nil {
		s.refusePrompt(w, "invalid_prompt", "Invalid prompt", err.Error())
		return
	}
	if !hasPrompt {
		s.refusePrompt(w, "no_prompt", "No prompt provided", "No prompt provided")
		return
	}
	for id, n := range req.Prompt {
		if n.ClassType == "" {
			s.refusePrompt(w, "invalid_prompt", "Cannot execute because a node is missing the class_type property.", fmt.Sprintf("Node ID '#%s'", id))
			return
		}
	}
	if req.PromptID == "" {
		req.PromptID = newUUID()
	}
	if s.opts.Queue == nil {
		s.writeError(w, http.StatusServiceUnavailable, errNoQueue.Error())
		return
	}
	sub, err := s.opts.Queue.Submit(r.Context(), req)
	var rej *Rejection
	if errors.As(err, &rej) {
		s.log.Warn("invalid prompt", "prompt_id", req.PromptID, "err", rej.Error())
		s.writeJSON(w, http.StatusBadRequest, promptRefusal{Error: rawOr(rej.Err, "{}"), NodeErrors: rawOr(rej.NodeErrors, "{}")})
		return
	}
	if err != nil {
		s.log.Error("queue prompt", "prompt_id", req.PromptID, "err", err)
		s.writeError(w, http.StatusInternalServerError, "cannot queue prompt", err.Error())
		return
	}
	s.log.Info("got prompt", "prompt_id", req.PromptID)
	s.writeJSON(w, http.StatusOK, promptAnswer{PromptID: req.PromptID, Number: sub.Number, NodeErrors: rawOr(sub.NodeErrors, "{}")})
}

func (s *Server) getQueue(w http.ResponseWriter, r *http.Request) {
	running, pending := []json.RawMessage{}, []json.RawMessage{}
	if s.opts.Queue != nil {
		var err error
		running, pending, err = s.opts.Queue.Items(r.Context())
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot list queue", err.Error())
			return
		}
	}
	if running == nil {
		running = []json.RawMessage{}
	}
	if pending == nil {
		pending = []json.RawMessage{}
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"queue_running": running, "queue_pending": pending})
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
	s.clearOrDelete(w, r, "queue", Queue.Clear, Queue.Delete)
}

// clearOrDelete serves POST /queue and POST /history, which take the same body:
// {"clear": true} empties the list, {"delete": [ids]} drops those entries.
func (s *Server) clearOrDelete(w http.ResponseWriter, r *http.Request, what string,
	clearAll func(Queue, context.Context) error, del func(Queue, context.Context, []string) error) {
	var body clearDelete
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	if s.opts.Queue == nil {
		s.writeError(w, http.StatusServiceUnavailable, errNoQueue.Error())
		return
	}
	if truthy(body.Clear) {
		if err := clearAll(s.opts.Queue, r.Context()); err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot clear "+what, err.Error())
			return
		}
	}
	if len(body.Delete) > 0 {
		if err := del(s.opts.Queue, r.Context(), body.ids()); err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot delete from "+what, err.Error())
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) postInterrupt(w http.ResponseWriter, r *http.Request) {
	// ComfyUI accepts an empty or non-JSON body here as a global interrupt.
	body, ok := s.readBody(w, r, s.opts.MaxPromptSize)
	if !ok {
		return
	}
	var req struct {
		PromptID any `json:"prompt_id"`
	}
	_ = json.Unmarshal(body, &req)
	id := ""
	if req.PromptID != nil {
		id = fmt.Sprint(req.PromptID)
	}
	if s.opts.Queue != nil {
		s.log.Info("interrupt", "prompt_id", id)
		s.opts.Queue.Interrupt(id)
	}
	w.WriteHeader(http.StatusOK)
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

func rawOr(raw json.RawMessage, def string) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage(def)
	}
	return raw
}

// newUUID returns a random version-4 UUID in its canonical text form (ComfyUI's
// str(uuid.uuid4()) prompt ids).
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
