package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Messages a websocket client sends. Besides ComfyUI's feature_flags (the first
// message only), a client may queue and control prompts over its socket, as the
// editor does when the server announces forgeflow_ws_prompt:
//
//	{"type": "prompt",    "id": REQ, "data": <a POST /prompt body>}
//	{"type": "interrupt", "id": REQ, "data": {"prompt_id": ID}}   (data optional)
//	{"type": "queue",     "id": REQ, "data": <a POST /queue body: clear, delete>}
//
// Each is answered on the same socket with TYPE_result or TYPE_error, whose data
// carries the request's id: the same checks, error shapes, durability and limits as
// the HTTP route, through the same code. Messages of another type are ignored, as
// ComfyUI ignores them; one that cannot be read as such a message gets an "error"
// message, at most errorReplyRate a second. codex/server.md lists the shapes.

// wsPromptFlag is the server feature flag that announces the prompt messages.
const wsPromptFlag = "forgeflow_ws_prompt"

// Bounds of client messages.
const (
	// wsEnvelopeSlack is what a message may hold beyond a POST /prompt body of
	// MaxPromptSize: the type and the request id.
	wsEnvelopeSlack = 64 << 10
	// maxRequestID bounds a request id (bytes of its JSON).
	maxRequestID = 256
	// errorReplyRate and errorReplyBurst bound the error messages sent to one client
	// for messages it should not have sent, so that a flood of them costs the server
	// no more than reading them.
	errorReplyRate  = 5
	errorReplyBurst = 20
)

// clientMessage is a message from a websocket client.
type clientMessage struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id"`
	Data json.RawMessage `json:"data"`
}

// requestError is the data of TYPE_error (and of "error"): the request's id, the
// status the HTTP route would have answered, and its body's "error" (ComfyUI's error
// object for a refused prompt, else a message) with "details" and "node_errors" where
// it has them.
type requestError struct {
	ID         json.RawMessage `json:"id"`
	Status     int             `json:"status"`
	Error      any             `json:"error"`
	Details    string          `json:"details,omitempty"`
	NodeErrors any             `json:"node_errors,omitempty"`
}

// wsMessageLimit is the largest prompt message a client may send: a POST /prompt body
// of MaxPromptSize with its envelope. A bigger one closes the connection (1009), as a
// message of another type over MaxWSMessageSize does.
func (s *Server) wsMessageLimit() int64 { return s.opts.MaxPromptSize + wsEnvelopeSlack }

// isPromptMessage reports whether a message is a JSON object of type "prompt".
func isPromptMessage(data []byte) bool {
	var m struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(data, &m) == nil && m.Type == "prompt"
}

// clientMessage handles one text message of client c and reports whether a next
// message still counts as the first (a message that is not JSON does not count, as
// in ComfyUI).
func (s *Server) clientMessage(ctx context.Context, c *wsClient, data []byte, first bool) bool {
	var m clientMessage
	if err := json.Unmarshal(data, &m); err != nil {
		s.log.Warn("invalid json from websocket client", "sid", c.sid, "err", err)
		s.replyInvalid(c, "error", nil, "message is not a JSON object with a string type", err.Error())
		return first
	}
	switch {
	case m.Type == "":
		s.replyInvalid(c, "error", nil, "message has no type", `want {"type": ..., "data": ...}`)
	case m.Type == "feature_flags":
		if first {
			s.featureFlags(c, m.Data)
		}
	case m.Type == "prompt" || m.Type == "interrupt" || m.Type == "queue":
		if !validRequestID(m.ID) {
			s.replyInvalid(c, m.Type+"_error", nil, "invalid request id", fmt.Sprintf("id must be a string or a number of at most %d bytes", maxRequestID))
			break
		}
		switch m.Type {
		case "prompt":
			s.wsPrompt(ctx, c, m)
		case "interrupt":
			s.wsInterrupt(c, m)
		case "queue":
			s.wsQueue(ctx, c, m)
		}
	}
	return false
}

// validRequestID accepts an absent id, a string or a number, of at most maxRequestID
// bytes.
func validRequestID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	if len(id) > maxRequestID {
		return false
	}
	var v any
	if json.Unmarshal(id, &v) != nil {
		return false
	}
	switch v.(type) {
	case string, float64, nil:
		return true
	}
	return false
}

// featureFlags keeps the client's flags and answers the server's (ComfyUI's
// feature-flags handshake).
func (s *Server) featureFlags(c *wsClient, raw json.RawMessage) {
	var flags map[string]any
	if json.Unmarshal(raw, &flags) != nil || flags == nil {
		flags = map[string]any{}
	}
	c.mu.Lock()
	c.flags = flags
	c.mu.Unlock()
	s.send(c, "feature_flags", s.features())
}

// send encodes one message for c.
func (s *Server) send(c *wsClient, typ string, data any) {
	msg, err := jsonMessage(typ, data)
	if err != nil {
		s.log.Error("encode websocket message", "type", typ, "err", err)
		return
	}
	c.enqueue(wsMessage{data: msg})
}

// replyInvalid answers a message the client should not have sent, within the client's
// error budget; past it the message is dropped silently.
func (s *Server) replyInvalid(c *wsClient, typ string, id json.RawMessage, msg, details string) {
	if !c.errorBudget.allow(time.Now()) {
		return
	}
	s.send(c, typ, requestError{ID: nullID(id), Status: http.StatusBadRequest, Error: msg, Details: details})
}

func nullID(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return json.RawMessage("null")
	}
	return id
}

// objectData decodes a message's data as a JSON object (numbers kept as json.Number);
// absent or null data gives nil with no error.
func objectData(raw json.RawMessage, v any) error {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("data must be a JSON object")
	}
	return decodeNumbers(raw, v)
}

// wsPrompt queues a prompt sent over the socket through submitPrompt, the path of POST
// /prompt; its events go to this client (its client_id is the socket's id). The
// prompt is queued, durably, whether or not the client is still there to hear the
// answer.
func (s *Server) wsPrompt(ctx context.Context, c *wsClient, m clientMessage) {
	if n := int64(len(m.Data)); n > s.opts.MaxPromptSize {
		s.send(c, "prompt_error", requestError{ID: nullID(m.ID), Status: http.StatusRequestEntityTooLarge, Error: "request body too large",
			Details: fmt.Sprintf("limit is %d bytes", s.opts.MaxPromptSize), NodeErrors: map[string]any{}})
		return
	}
	var body map[string]json.RawMessage
	if err := objectData(m.Data, &body); err != nil || body == nil {
		details := "data must be the POST /prompt body"
		if err != nil {
			details = err.Error()
		}
		s.replyInvalid(c, "prompt_error", m.ID, "invalid JSON body", details)
		return
	}
	out := s.submitPrompt(context.WithoutCancel(ctx), body, promptSource{clientID: &c.sid, usage: c.usageSource})
	id := nullID(m.ID)
	switch {
	case out.answer != nil:
		s.send(c, "prompt_result", struct {
			ID json.RawMessage `json:"id"`
			*promptAnswer
		}{id, out.answer})
	case out.refusal != nil:
		// The refusal's own JSON ({"error", "node_errors"}) with the id and status.
		raw, _ := json.Marshal(out.refusal) // a refusal always encodes
		var r struct {
			Error      json.RawMessage `json:"error"`
			NodeErrors json.RawMessage `json:"node_errors"`
		}
		_ = json.Unmarshal(raw, &r)
		s.send(c, "prompt_error", requestError{ID: id, Status: out.status, Error: r.Error, NodeErrors: r.NodeErrors})
	default:
		s.send(c, "prompt_error", requestError{ID: id, Status: out.status, Error: out.err.Error, Details: out.err.Details, NodeErrors: map[string]any{}})
	}
}

// wsInterrupt interrupts as POST /interrupt does: the prompt data.prompt_id if it
// runs, whatever runs without one.
func (s *Server) wsInterrupt(c *wsClient, m clientMessage) {
	var body struct {
		PromptID any `json:"prompt_id"`
	}
	if err := objectData(m.Data, &body); err != nil {
		s.replyInvalid(c, "interrupt_error", m.ID, "invalid JSON body", err.Error())
		return
	}
	var target any
	id := ""
	if body.PromptID != nil {
		id = fmt.Sprint(body.PromptID)
		target = id
	}
	s.interrupt(id)
	s.send(c, "interrupt_result", map[string]any{"id": nullID(m.ID), "prompt_id": target})
}

// wsQueue changes the queue as POST /queue does.
func (s *Server) wsQueue(ctx context.Context, c *wsClient, m clientMessage) {
	var body clearDelete
	if err := objectData(m.Data, &body); err != nil {
		s.replyInvalid(c, "queue_error", m.ID, "invalid JSON body", err.Error())
		return
	}
	if status, e := s.changeQueue(context.WithoutCancel(ctx), body); e != nil {
		s.send(c, "queue_error", requestError{ID: nullID(m.ID), Status: status, Error: e.Error, Details: e.Details})
		return
	}
	s.send(c, "queue_result", map[string]any{"id": nullID(m.ID)})
}
