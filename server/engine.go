package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// Validator checks a prompt against the node schemas before it is queued
// (execution.validate_prompt). It returns the output node ids to execute and the
// node_errors of outputs that were dropped while others remain; a prompt that cannot run
// returns a *Rejection.
type Validator func(p graph.Prompt, partialTargets []string) (outputs []string, nodeErrors json.RawMessage, err error)

// sensitiveExtraData are extra_data keys ComfyUI keeps out of /queue and /history
// (execution.py SENSITIVE_EXTRA_DATA_KEYS).
var sensitiveExtraData = []string{"auth_token_comfy_org", "api_key_comfy_org"}

// EngineQueue adapts the executor's Engine to Queue.
type EngineQueue struct {
	Engine   *executor.Engine
	Validate Validator
}

var (
	_ Queue = (*EngineQueue)(nil)
	_ Freer = (*EngineQueue)(nil)
)

// Submit validates the prompt and queues it durably.
func (q *EngineQueue) Submit(ctx context.Context, req PromptRequest) (Submitted, error) {
	outputs, nodeErrors, err := q.Validate(req.Prompt, req.PartialExecutionTargets)
	if err != nil {
		return Submitted{}, err
	}
	job := &executor.Job{ID: req.PromptID, Prompt: req.Prompt, ExtraData: map[string]any{}, Outputs: outputs}
	for k, v := range req.ExtraData {
		if slices.Contains(sensitiveExtraData, k) {
			if job.Sensitive == nil {
				job.Sensitive = map[string]any{}
			}
			job.Sensitive[k] = v
			continue
		}
		job.ExtraData[k] = v
	}
	n, err := q.Engine.Submit(ctx, job, executor.PushOptions{Front: req.Front, Number: req.Number})
	if errors.Is(err, executor.ErrDuplicate) {
		return Submitted{}, newRejection("invalid_prompt", "Prompt id already queued", fmt.Sprintf("prompt_id %q is pending or running", req.PromptID))
	}
	if err != nil {
		return Submitted{}, err
	}
	return Submitted{Number: n, NodeErrors: nodeErrors}, nil
}

// Items lists the running and pending jobs as ComfyUI's tuples.
func (q *EngineQueue) Items(ctx context.Context) (running, pending []json.RawMessage, err error) {
	r, p, err := q.Engine.ListQueue(ctx)
	if err != nil {
		return nil, nil, err
	}
	if running, err = marshalAll(r); err != nil {
		return nil, nil, err
	}
	if pending, err = marshalAll(p); err != nil {
		return nil, nil, err
	}
	return running, pending, nil
}

func marshalAll[T any](items []T) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Remaining is queue_remaining; a store error counts as an empty queue.
func (q *EngineQueue) Remaining() int {
	n, _ := q.Engine.QueueRemaining(context.Background())
	return n
}

func (q *EngineQueue) Clear(ctx context.Context) error { return q.Engine.ClearQueue(ctx) }

func (q *EngineQueue) Delete(ctx context.Context, ids []string) error {
	_, err := q.Engine.DeleteQueued(ctx, ids...)
	return err
}

func (q *EngineQueue) Interrupt(promptID string) { q.Engine.Interrupt(promptID) }

func (q *EngineQueue) History(ctx context.Context, maxItems, offset int) ([]HistoryEntry, error) {
	entries, err := q.Engine.History(ctx, maxItems, offset)
	if err != nil {
		return nil, err
	}
	out := make([]HistoryEntry, 0, len(entries))
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		out = append(out, HistoryEntry{PromptID: e.Prompt.ID, Data: b})
	}
	return out, nil
}

func (q *EngineQueue) HistoryItem(ctx context.Context, id string) (HistoryEntry, bool, error) {
	e, err := q.Engine.HistoryItem(ctx, id)
	if errors.Is(err, executor.ErrNotFound) {
		return HistoryEntry{}, false, nil
	}
	if err != nil {
		return HistoryEntry{}, false, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return HistoryEntry{}, false, err
	}
	return HistoryEntry{PromptID: id, Data: b}, true, nil
}

func (q *EngineQueue) ClearHistory(ctx context.Context) error { return q.Engine.ClearHistory(ctx) }

func (q *EngineQueue) DeleteHistory(ctx context.Context, ids []string) error {
	return q.Engine.DeleteHistory(ctx, ids...)
}

// FreeMemory drops the executor's cached node outputs.
func (q *EngineQueue) FreeMemory() { q.Engine.FreeMemory() }

// Forward publishes the engine's events to websocket clients until ctx is done. A
// subscription the engine closed for falling behind is renewed.
func (s *Server) Forward(ctx context.Context, e *executor.Engine) {
	for {
		sub := e.Subscribe()
		if !s.forward(ctx, sub) {
			sub.Close()
			return
		}
		s.log.Warn("event subscription overflowed; resubscribing", "dropped", sub.Dropped())
		sub.Close()
	}
}

// forward drains one subscription; it reports whether to subscribe again.
func (s *Server) forward(ctx context.Context, sub *executor.Subscription) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case ev, ok := <-sub.C:
			if !ok {
				return sub.Overflowed()
			}
			s.Publish(fromExecutor(ev))
		}
	}
}

// fromExecutor converts an executor event to the server's.
func fromExecutor(ev executor.Event) Event {
	out := Event{Type: ev.Type, Data: ev.Data, ClientID: ev.ClientID, Broadcast: ev.Broadcast}
	if ev.Preview != nil {
		p := ev.Preview
		var parent any
		if p.ParentNodeID != nil {
			parent = *p.ParentNodeID
		}
		out.Preview = &Preview{
			Format: p.Image.Format,
			Data:   p.Image.Data,
			Metadata: map[string]any{
				"node_id":         p.NodeID,
				"prompt_id":       p.PromptID,
				"display_node_id": p.DisplayNodeID,
				"parent_node_id":  parent,
				"real_node_id":    p.RealNodeID,
			},
		}
	}
	return out
}

// newRejection builds a Rejection with ComfyUI's error object and no node errors.
func newRejection(typ, msg, details string) *Rejection {
	e, _ := json.Marshal(comfyError{Type: typ, Message: msg, Details: details, ExtraInfo: map[string]any{}})
	return &Rejection{Err: e, NodeErrors: json.RawMessage("{}")}
}
