package executor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// drain reads sub until prompt id ends, in its own goroutine (a long prompt publishes
// more events than a subscriber's backlog holds), and returns what it read.
func drain(sub *executor.Subscription, id string) <-chan []executor.Event {
	out := make(chan []executor.Event, 1)
	go func() {
		var evs []executor.Event
		for ev := range sub.C {
			evs = append(evs, ev)
			if d, ok := ev.Data.(executor.ExecutingData); ok && d.Node == nil && d.PromptID == id {
				break
			}
		}
		out <- evs
	}()
	return out
}

// TestProgressStateLongChainLinear: a 10,000-node chain sends its progress_state at
// most once per interval (plus the final one), each copy holding the nodes started so
// far, so what it sends is linear in the graph for a given run time. ComfyUI's way (the
// whole state on every node update) sent 50 million node entries for this prompt.
func TestProgressStateLongChainLinear(t *testing.T) {
	const n = 10000
	fx := newFixture(t)
	interval := 50 * time.Millisecond
	// The backlog holds every event of the prompt: on a loaded machine the engine may
	// run ahead of this reader, and the test is about what the engine sends.
	e := newEngine(t, fx, executor.Options{ProgressInterval: interval, SubscriberBacklog: 4 * n})
	sub := e.Subscribe()
	defer sub.Close()
	got := drain(sub, "long")
	start := time.Now()
	entry := e.Execute(context.Background(), &executor.Job{ID: "long", Prompt: longChain(n, 1)})
	elapsed := time.Since(start)
	var evs []executor.Event
	select {
	case evs = <-got:
	case <-time.After(time.Minute):
		t.Fatal("the prompt's events never ended")
	}
	if entry.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("status %+v", entry.Status)
	}
	if v := entry.Outputs["sink"]["values"]; len(v.([]any)) != 1 || v.([]any)[0] != int64(n+1) {
		t.Errorf("sink shows %v, want %d", v, n+1)
	}
	states, entries := 0, 0
	var last executor.ProgressStateData
	for _, ev := range evs {
		if d, ok := ev.Data.(executor.ProgressStateData); ok {
			states++
			entries += len(d.Nodes)
			last = d
		}
	}
	// One send at the first update, at most one per interval after it, one at the end;
	// and at most about 1,000 node entries per interval.
	if limit := 2 + int(elapsed/interval); states > limit {
		t.Errorf("%d progress_state events in %v, want at most %d", states, elapsed, limit)
	}
	if limit := 2*(n+2) + 1000*int(elapsed/interval+1); entries > limit {
		t.Errorf("%d node entries sent in %v, want at most %d", entries, elapsed, limit)
	}
	if len(last.Nodes) != n+2 {
		t.Fatalf("final progress_state has %d nodes, want %d", len(last.Nodes), n+2)
	}
	for id, np := range last.Nodes {
		if np.State != executor.NodeFinished {
			t.Fatalf("node %s ends %q", id, np.State)
		}
	}
	if evs[len(evs)-3].Type != executor.EventProgressState || evs[len(evs)-2].Type != executor.EventExecutionSuccess {
		t.Errorf("the last events are %s, %s, %s; want progress_state, execution_success, executing",
			evs[len(evs)-3].Type, evs[len(evs)-2].Type, evs[len(evs)-1].Type)
	}
	t.Logf("%d nodes in %v: %d progress_state events, %d node entries in all", n+2, elapsed, states, entries)
}

// waiter is a node that reports no progress and waits for release: a state change
// just before it is sent by the timer, not by a later update.
type waiter struct {
	started chan struct{}
	release chan struct{}
}

func (w *waiter) Schema() *graph.Schema {
	return &graph.Schema{Name: "Wait", OutputNode: true, Inputs: []graph.Input{{Name: "value", Type: "INT"}}}
}

func (w *waiter) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	close(w.started)
	select {
	case <-w.release:
	case <-ctx.Done():
	}
	return nodes.Result{Outputs: []any{}}, nil
}

// TestProgressStateTrailingSend: an update inside the interval is not lost: the state
// goes out when the interval ends, while the next node is still running.
func TestProgressStateTrailingSend(t *testing.T) {
	fx := newFixture(t)
	w := &waiter{started: make(chan struct{}), release: make(chan struct{})}
	if err := fx.reg.Register(w); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, fx, executor.Options{ProgressInterval: time.Hour / 2})
	sub := e.Subscribe()
	defer sub.Close()
	p := graph.Prompt{
		"1": node("Const", map[string]any{"value": json.Number("1")}),
		"2": node("Wait", map[string]any{"value": graph.NewLink("1", 0)}),
	}
	done := make(chan *executor.HistoryEntry, 1)
	go func() { done <- e.Execute(context.Background(), &executor.Job{ID: "t", Prompt: p}) }()
	<-w.started
	// Const's running state went out at once; its finished state and Wait's running
	// state wait for the interval (half an hour here), so nothing more comes now.
	var states []executor.ProgressStateData
	for len(states) < 1 {
		if d, ok := (<-sub.C).Data.(executor.ProgressStateData); ok {
			states = append(states, d)
		}
	}
	if np := states[0].Nodes["1"]; np.State != executor.NodeRunning || len(states[0].Nodes) != 1 {
		t.Errorf("first progress_state %+v", states[0].Nodes)
	}
	close(w.release)
	<-done
	for ev := range sub.C {
		if d, ok := ev.Data.(executor.ProgressStateData); ok {
			states = append(states, d)
		}
		if d, ok := ev.Data.(executor.ExecutingData); ok && d.Node == nil {
			break
		}
	}
	// The end of the prompt sends what was pending: one more state, everything finished.
	if len(states) != 2 || states[1].Nodes["1"].State != executor.NodeFinished || states[1].Nodes["2"].State != executor.NodeFinished {
		t.Fatalf("progress_state events %+v", states)
	}

	// With a short interval, Wait's running state arrives while it still waits.
	w = &waiter{started: make(chan struct{}), release: make(chan struct{})}
	fx2 := newFixture(t)
	if err := fx2.reg.Register(w); err != nil {
		t.Fatal(err)
	}
	e = newEngine(t, fx2, executor.Options{ProgressInterval: 20 * time.Millisecond})
	sub2 := e.Subscribe()
	defer sub2.Close()
	go func() { done <- e.Execute(context.Background(), &executor.Job{ID: "t2", Prompt: p}) }()
	defer func() { close(w.release); <-done }()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev := <-sub2.C:
			if d, ok := ev.Data.(executor.ProgressStateData); ok && d.Nodes["2"].State == executor.NodeRunning {
				return
			}
		case <-timeout:
			t.Fatal("the waiting node's running state was never sent")
		}
	}
}
