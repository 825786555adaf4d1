package server

import (
	"context"

	"github.com/forgeflow/forgeflow/executor"
)

// Forward publishes the engine's events to websocket clients until ctx is done. A
// subscription the engine closed for falling behind is renewed. Without an engine it
// returns at once.
func (s *Server) Forward(ctx context.Context) {
	if s.engine == nil {
		return
	}
	for {
		sub := s.engine.Subscribe()
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
