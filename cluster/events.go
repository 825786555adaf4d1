package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/nodes"
)

// wireEvent is an executor.Event on the events subject. Events are at-most-once
// (core NATS, not JetStream): a front that is reconnecting misses some, as a
// websocket client that reconnects does; the history is the record.
type wireEvent struct {
	Type      string          `json:"type"`
	ClientID  string          `json:"client_id,omitempty"`
	Broadcast bool            `json:"broadcast,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Preview   *wirePreview    `json:"preview,omitempty"`
	From      string          `json:"from"`
}

type wirePreview struct {
	Format        string  `json:"format"`
	Image         []byte  `json:"image"`
	PromptID      string  `json:"prompt_id"`
	NodeID        string  `json:"node_id"`
	DisplayNodeID string  `json:"display_node_id"`
	ParentNodeID  *string `json:"parent_node_id"`
	RealNodeID    string  `json:"real_node_id"`
}

// PublishEvent sends an event of this process to every process subscribed with
// Events (the serve fronts and `forgeflow run --queue`).
func (q *Queue) PublishEvent(ev executor.Event) error {
	b, err := q.encodeEvent(ev)
	if err != nil {
		return err
	}
	return q.nc.Publish(q.names.events, b)
}

// encodeEvent writes an event as the events subject carries it.
func (q *Queue) encodeEvent(ev executor.Event) ([]byte, error) {
	w := wireEvent{Type: ev.Type, ClientID: ev.ClientID, Broadcast: ev.Broadcast, From: q.opts.Name}
	if ev.Data != nil {
		b, err := json.Marshal(ev.Data)
		if err != nil {
			return nil, fmt.Errorf("cluster: event %s: %w", ev.Type, err)
		}
		w.Data = b
	}
	if p := ev.Preview; p != nil {
		w.Preview = &wirePreview{Format: p.Image.Format, Image: p.Image.Data, PromptID: p.PromptID, NodeID: p.NodeID,
			DisplayNodeID: p.DisplayNodeID, ParentNodeID: p.ParentNodeID, RealNodeID: p.RealNodeID}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("cluster: event %s: %w", ev.Type, err)
	}
	return b, nil
}

// Events calls fn with every event any process of the cluster publishes (in each
// publisher's order) until ctx is done. Data is decoded into the executor's *Data
// types by event name, so consumers see what a local engine would give them.
func (q *Queue) Events(ctx context.Context, fn func(executor.Event)) error {
	sub, err := q.nc.Subscribe(q.names.events, func(m *nats.Msg) {
		ev, from, err := decodeEvent(m.Data)
		if err != nil {
			q.log.Warn("unreadable cluster event skipped", "err", err)
			return
		}
		if from == q.opts.Name && ev.Type == executor.EventStatus {
			return // this process's engine told its own clients already
		}
		fn(ev)
	})
	if err != nil {
		return fmt.Errorf("cluster: subscribe to events: %w", err)
	}
	// Progress and previews of many workers can outpace a front for a moment.
	_ = sub.SetPendingLimits(1<<16, 256<<20)
	go func() {
		select {
		case <-ctx.Done():
		case <-q.ctx.Done():
		}
		_ = sub.Unsubscribe()
	}()
	return nil
}

// decodeEvent reads an event of the events subject and the name of the process that sent it.
func decodeEvent(b []byte) (ev executor.Event, from string, err error) {
	var w wireEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return executor.Event{}, "", err
	}
	ev = executor.Event{Type: w.Type, ClientID: w.ClientID, Broadcast: w.Broadcast}
	if p := w.Preview; p != nil {
		ev.Preview = &executor.PreviewFrame{Image: nodes.PreviewImage{Format: p.Format, Data: p.Image}, PromptID: p.PromptID,
			NodeID: p.NodeID, DisplayNodeID: p.DisplayNodeID, ParentNodeID: p.ParentNodeID, RealNodeID: p.RealNodeID}
		return ev, w.From, nil
	}
	if len(w.Data) == 0 {
		return ev, w.From, nil
	}
	data, err := decodeData(w.Type, w.Data)
	if err != nil {
		return executor.Event{}, "", fmt.Errorf("event %s: %w", w.Type, err)
	}
	ev.Data = data
	return ev, w.From, nil
}

// decodeData reads an event's data as the executor's type for that event; an event
// this version does not know keeps its JSON as it came.
func decodeData(typ string, raw json.RawMessage) (any, error) {
	switch typ {
	case executor.EventStatus:
		return decodeAs[executor.StatusData](raw)
	case executor.EventExecutionStart:
		return decodeAs[executor.ExecutionStartData](raw)
	case executor.EventExecutionCached:
		return decodeAs[executor.ExecutionCachedData](raw)
	case executor.EventExecuting:
		return decodeAs[executor.ExecutingData](raw)
	case executor.EventProgress:
		return decodeAs[executor.ProgressData](raw)
	case executor.EventProgressState:
		return decodeAs[executor.ProgressStateData](raw)
	case executor.EventExecuted:
		return decodeAs[executor.ExecutedData](raw)
	case executor.EventExecutionSuccess:
		return decodeAs[executor.ExecutionSuccessData](raw)
	case executor.EventExecutionError:
		return decodeAs[executor.ExecutionErrorData](raw)
	case executor.EventExecutionInterrupted:
		return decodeAs[executor.ExecutionInterruptedData](raw)
	}
	return raw, nil
}

// decodeAs decodes raw as a T, keeping numbers as json.Number (64-bit seeds).
func decodeAs[T any](raw json.RawMessage) (any, error) {
	var d T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return nil, err
	}
	return d, nil
}

// Interrupt asks every worker to interrupt promptID if it runs it, or whatever it
// runs when promptID is empty (POST /interrupt on any serve front).
func (q *Queue) Interrupt(promptID string) error {
	return q.nc.Publish(q.names.interrupt, []byte(promptID))
}

// onInterrupt calls fn for every cluster interrupt until the queue closes.
func (q *Queue) onInterrupt(fn func(promptID string)) error {
	sub, err := q.nc.Subscribe(q.names.interrupt, func(m *nats.Msg) { fn(string(m.Data)) })
	if err != nil {
		return fmt.Errorf("cluster: subscribe to interrupts: %w", err)
	}
	go func() {
		<-q.ctx.Done()
		_ = sub.Unsubscribe()
	}()
	return nil
}

// promptOf returns the prompt id an event is about, or "".
func promptOf(ev executor.Event) string {
	if ev.Preview != nil {
		return ev.Preview.PromptID
	}
	switch d := ev.Data.(type) {
	case executor.ExecutionStartData:
		return d.PromptID
	case executor.ExecutionCachedData:
		return d.PromptID
	case executor.ExecutingData:
		return d.PromptID
	case executor.ProgressData:
		return d.PromptID
	case executor.ProgressStateData:
		return d.PromptID
	case executor.ExecutedData:
		return d.PromptID
	case executor.ExecutionSuccessData:
		return d.PromptID
	case executor.ExecutionErrorData:
		return d.PromptID
	case executor.ExecutionInterruptedData:
		return d.PromptID
	}
	return ""
}
