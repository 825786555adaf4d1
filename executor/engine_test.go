package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/store"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// chain is 1 Const → 2 Add(b) → 3 Sink, plus 4 Const → 5 Sink.
func chain(b int) graph.Prompt {
	return graph.Prompt{
		"1": node("Const", map[string]any{"value": json.Number("1")}),
		"2": node("Add", map[string]any{"a": graph.NewLink("1", 0), "b": json.Number(itoa(b))}),
		"3": node("Sink", map[string]any{"value": graph.NewLink("2", 0)}),
		"4": node("Const", map[string]any{"value": json.Number("5")}),
		"5": node("Sink", map[string]any{"value": graph.NewLink("4", 0)}),
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func newEngine(t *testing.T, fx *fixture, opts executor.Options) *executor.Engine {
	t.Helper()
	opts.Registry = fx.reg
	e, err := executor.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// events collects what a subscription receives until the prompt's final "executing".
func collect(t *testing.T, sub *executor.Subscription, promptID string) []executor.Event {
	t.Helper()
	var out []executor.Event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				t.Fatal("subscription closed")
			}
			out = append(out, ev)
			if d, ok := ev.Data.(executor.ExecutingData); ok && d.Node == nil && d.PromptID == promptID {
				return out
			}
		case <-timeout:
			t.Fatalf("no end of prompt %s; got %d events", promptID, len(out))
		}
	}
}

func cachedNodes(t *testing.T, evs []executor.Event) []string {
	t.Helper()
	for _, ev := range evs {
		if d, ok := ev.Data.(executor.ExecutionCachedData); ok {
			return d.Nodes
		}
	}
	t.Fatal("no execution_cached event")
	return nil
}

func execute(t *testing.T, e *executor.Engine, id string, p graph.Prompt) (*executor.HistoryEntry, []executor.Event) {
	t.Helper()
	sub := e.Subscribe()
	defer sub.Close()
	entry := e.Execute(context.Background(), &executor.Job{ID: id, Prompt: p, ExtraData: map[string]any{"client_id": "c1"}})
	return entry, collect(t, sub, id)
}

func TestCacheReexecutesOnlyDownstream(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	entry, _ := execute(t, e, "p1", chain(10))
	if entry.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("status %+v", entry.Status)
	}
	if got := fx.runs.take(); !reflect.DeepEqual(got, map[string]int{"1": 1, "2": 1, "3": 1, "4": 1, "5": 1}) {
		t.Fatalf("first run: %v", got)
	}
	if got := entry.Outputs["3"]["values"]; !reflect.DeepEqual(got, []any{int64(11)}) {
		t.Errorf("output of 3 = %v, want [11]", got)
	}

	entry, evs := execute(t, e, "p2", chain(20))
	if got := fx.runs.take(); !reflect.DeepEqual(got, map[string]int{"2": 1, "3": 1}) {
		t.Fatalf("after changing 2's widget, ran %v; want only 2 and 3", got)
	}
	if got := cachedNodes(t, evs); !reflect.DeepEqual(got, []string{"1", "4", "5"}) {
		t.Errorf("execution_cached = %v, want [1 4 5]", got)
	}
	if got := entry.Outputs["3"]["values"]; !reflect.DeepEqual(got, []any{int64(21)}) {
		t.Errorf("output of 3 = %v, want [21]", got)
	}
	// The cached output node's UI is still in the history.
	if got := entry.Outputs["5"]["values"]; !reflect.DeepEqual(got, []any{int64(5)}) {
		t.Errorf("cached output of 5 = %v, want [5]", got)
	}

	// A prompt that cannot be planned does not empty the cache.
	if h, _ := execute(t, e, "bad", graph.Prompt{"1": node("Nope", nil)}); h.Status.StatusStr != executor.StatusError {
		t.Fatalf("bad prompt: %+v", h.Status)
	}
	// Same prompt again: nothing runs.
	_, evs = execute(t, e, "p3", chain(20))
	if got := fx.runs.take(); len(got) != 0 {
		t.Fatalf("identical prompt ran %v", got)
	}
	if got := cachedNodes(t, evs); len(got) != 5 {
		t.Errorf("execution_cached = %v, want all 5", got)
	}
}

func TestIsChangedBustsCache(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	p := graph.Prompt{
		"1": node("File", map[string]any{"path": "a.png"}),
		"2": node("Add", map[string]any{"a": graph.NewLink("1", 0), "b": json.Number("1")}),
		"3": node("Sink", map[string]any{"value": graph.NewLink("2", 0)}),
	}
	execute(t, e, "p1", p)
	fx.runs.take()
	execute(t, e, "p2", p)
	if got := fx.runs.take(); len(got) != 0 {
		t.Fatalf("unchanged file: ran %v", got)
	}
	fx.file.set("v2")
	execute(t, e, "p3", p)
	if got := fx.runs.take(); !reflect.DeepEqual(got, map[string]int{"1": 1, "2": 1, "3": 1}) {
		t.Fatalf("changed file: ran %v, want 1, 2, 3", got)
	}
}

func TestCachePolicies(t *testing.T) {
	a := func() graph.Prompt { return chain(10) }
	b := func() graph.Prompt {
		return graph.Prompt{
			"1": node("Const", map[string]any{"value": json.Number("100")}),
			"2": node("Sink", map[string]any{"value": graph.NewLink("1", 0)}),
		}
	}
	cases := []struct {
		name  string
		cache executor.CacheOptions
		// runs of the second A (after A then B), and of A run twice in a row
		wantAfterB, wantRepeat int
	}{
		{"classic", executor.CacheOptions{Mode: executor.CacheClassic}, 5, 0},
		{"lru big", executor.CacheOptions{Mode: executor.CacheLRU, LRUSize: 10}, 0, 0},
		// LRU of 3: A's 5 entries all stay (a prompt's own entries are never evicted
		// after it), then B's 2 push out all but one of A's.
		{"lru small", executor.CacheOptions{Mode: executor.CacheLRU, LRUSize: 3}, -1, 0},
		{"none", executor.CacheOptions{Mode: executor.CacheNone}, 5, 5},
	}
	total := func(m map[string]int) int {
		n := 0
		for _, v := range m {
			n += v
		}
		return n
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			e := newEngine(t, fx, executor.Options{Cache: tc.cache})
			execute(t, e, "a1", a())
			execute(t, e, "b1", b())
			fx.runs.take()
			execute(t, e, "a2", a())
			got := total(fx.runs.take())
			if tc.wantAfterB >= 0 && got != tc.wantAfterB {
				t.Errorf("A after B ran %d nodes, want %d", got, tc.wantAfterB)
			}
			if tc.wantAfterB < 0 && (got == 0 || got == 5) {
				t.Errorf("A after B with a small LRU ran %d nodes, want a partial re-run", got)
			}
			execute(t, e, "a3", a())
			if got := total(fx.runs.take()); got != tc.wantRepeat {
				t.Errorf("A repeated ran %d nodes, want %d", got, tc.wantRepeat)
			}
		})
	}
	if _, err := executor.New(executor.Options{Registry: newFixture(t).reg, Cache: executor.CacheOptions{Mode: executor.CacheLRU}}); err == nil {
		t.Error("LRU without a size: no error")
	}
}

func TestRAMPressureEviction(t *testing.T) {
	for _, tc := range []struct {
		name  string
		avail uint64
		want  int // nodes re-run by an identical second prompt
	}{
		{"plenty", 8 << 30, 0},
		{"pressure", 1 << 20, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			calls := 0
			e := newEngine(t, fx, executor.Options{Cache: executor.CacheOptions{
				Mode:         executor.CacheLRU,
				LRUSize:      100,
				MinFreeRAM:   1 << 30,
				AvailableRAM: func() (uint64, error) { calls++; return tc.avail, nil },
			}})
			execute(t, e, "p1", chain(1))
			fx.runs.take()
			// Under pressure, the cache is emptied before the next node runs; the second
			// prompt finds only what survived.
			execute(t, e, "p2", graph.Prompt{"9": node("Fail", map[string]any{"value": json.Number("1")})})
			fx.runs.take()
			execute(t, e, "p3", chain(1))
			n := 0
			for _, v := range fx.runs.take() {
				n += v
			}
			if n != tc.want {
				t.Errorf("re-ran %d nodes, want %d", n, tc.want)
			}
			if calls == 0 {
				t.Error("AvailableRAM never called")
			}
		})
	}
}

func TestListMapping(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	p := graph.Prompt{
		"1": node("Range", map[string]any{"n": json.Number("3")}),
		"2": node("Add", map[string]any{"a": graph.NewLink("1", 0), "b": json.Number("10")}),
		"3": node("Sink", map[string]any{"value": graph.NewLink("2", 0)}),
		"4": node("Sum", map[string]any{"values": graph.NewLink("2", 0)}),
		// zip: a = [0 1 2] with b = [0 1]: the shorter repeats its last item.
		"5": node("Range", map[string]any{"n": json.Number("2")}),
		"6": node("Add", map[string]any{"a": graph.NewLink("1", 0), "b": graph.NewLink("5", 0)}),
		"7": node("Sum", map[string]any{"values": graph.NewLink("6", 0)}),
	}
	entry, _ := execute(t, e, "p", p)
	if entry.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("status: %+v", entry.Status.Messages)
	}
	runs := fx.runs.take()
	if runs["2"] != 3 || runs["3"] != 3 || runs["4"] != 1 || runs["6"] != 3 {
		t.Errorf("runs = %v; want Add and Sink mapped 3 times, Sum once", runs)
	}
	if got := entry.Outputs["3"]["values"]; !reflect.DeepEqual(got, []any{int64(10), int64(11), int64(12)}) {
		t.Errorf("mapped Sink UI = %v, want [10 11 12] merged", got)
	}
	if got := entry.Outputs["4"]["sum"]; !reflect.DeepEqual(got, []any{int64(33)}) {
		t.Errorf("Sum over the list = %v, want [33]", got)
	}
	// 0+0, 1+1, 2+1 (b's last item repeated).
	if got := entry.Outputs["7"]["sum"]; !reflect.DeepEqual(got, []any{int64(5)}) {
		t.Errorf("zipped sum = %v, want [5]", got)
	}
	if got := entry.Outputs["7"]["count"]; !reflect.DeepEqual(got, []any{3}) {
		t.Errorf("zipped length = %v, want [3]", got)
	}
}

// startWorker opens a bbolt store in a temp dir and runs the engine's worker.
func startWorker(t *testing.T, fx *fixture, path string) (*executor.Engine, *store.Store, func()) {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, fx, executor.Options{Queue: st})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		st.Close()
	}
	return e, st, stop
}

// waitHistory returns the history entry of prompt id once the worker has stored it: it
// waits for the end-of-prompt event (executing with no node), which the worker
// publishes after storing the entry.
func waitHistory(t *testing.T, e *executor.Engine, id string) *executor.HistoryEntry {
	t.Helper()
	sub := e.Subscribe()
	defer sub.Close()
	deadline := time.After(10 * time.Second)
	for {
		h, err := e.Queue().GetHistory(context.Background(), id)
		if err == nil {
			return h
		}
		if !errors.Is(err, executor.ErrNotFound) {
			t.Fatal(err)
		}
		for done := false; !done; {
			select {
			case ev, ok := <-sub.C:
				if !ok {
					t.Fatalf("event subscription closed while waiting for prompt %s", id)
				}
				d, isExec := ev.Data.(executor.ExecutingData)
				done = ev.Type == executor.EventExecuting && isExec && d.Node == nil && d.PromptID == id
			case <-deadline:
				t.Fatalf("prompt %s never finished", id)
			}
		}
	}
}

func submit(t *testing.T, e *executor.Engine, id string, p graph.Prompt) {
	t.Helper()
	if _, err := e.Submit(context.Background(), &executor.Job{ID: id, Prompt: p, ExtraData: map[string]any{"client_id": "c1"}}, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestInterruptStopsBlockedNode(t *testing.T) {
	fx := newFixture(t)
	e, _, stop := startWorker(t, fx, filepath.Join(t.TempDir(), "q.db"))
	defer stop()
	sub := e.Subscribe()
	defer sub.Close()
	submit(t, e, "block", graph.Prompt{"1": node("Blocker", map[string]any{"steps": json.Number("0")})})
	submit(t, e, "after", chain(1))
	select {
	case <-fx.started:
	case <-time.After(10 * time.Second):
		t.Fatal("blocker never started")
	}
	if e.Interrupt("not-running") {
		t.Error("interrupt of another prompt id reported success")
	}
	if !e.Interrupt("block") {
		t.Fatal("interrupt of the running prompt failed")
	}
	h := waitHistory(t, e, "block")
	if h.Status.StatusStr != executor.StatusError || h.Status.Completed {
		t.Errorf("status = %+v", h.Status)
	}
	last := h.Status.Messages[len(h.Status.Messages)-1]
	d, ok := last.Data.(map[string]any)
	if last.Event != executor.EventExecutionInterrupted || !ok || d["node_id"] != "1" || d["node_type"] != "Blocker" {
		t.Errorf("last message = %s %v", last.Event, last.Data)
	}
	if h := waitHistory(t, e, "after"); h.Status.StatusStr != executor.StatusSuccess {
		t.Errorf("next prompt: %+v", h.Status)
	}
	evs := collect(t, sub, "block")
	var sawProgress, sawPreview, sawInterrupted bool
	for _, ev := range evs {
		switch ev.Type {
		case executor.EventProgress:
			sawProgress = true
		case executor.EventPreview:
			sawPreview = ev.Preview != nil && ev.Preview.NodeID == "1" && ev.Preview.PromptID == "block"
		case executor.EventExecutionInterrupted:
			sawInterrupted = ev.ClientID == "c1" && !ev.Broadcast
		}
	}
	if !sawProgress || !sawPreview || !sawInterrupted {
		t.Errorf("progress %v, preview %v, interrupted %v", sawProgress, sawPreview, sawInterrupted)
	}
}

func TestPanicReportsErrorAndQueueGoesOn(t *testing.T) {
	fx := newFixture(t)
	e, _, stop := startWorker(t, fx, filepath.Join(t.TempDir(), "q.db"))
	defer stop()
	submit(t, e, "bad", graph.Prompt{
		"1": node("Const", map[string]any{"value": json.Number("3")}),
		"2": node("Panic", map[string]any{"value": graph.NewLink("1", 0)}),
	})
	submit(t, e, "fail", graph.Prompt{"1": node("Fail", map[string]any{"value": json.Number("3")})})
	submit(t, e, "good", chain(2))

	h := waitHistory(t, e, "bad")
	if h.Status.StatusStr != executor.StatusError {
		t.Fatalf("status %+v", h.Status)
	}
	msg := h.Status.Messages[len(h.Status.Messages)-1]
	if msg.Event != executor.EventExecutionError {
		t.Fatalf("last message %s", msg.Event)
	}
	d := msg.Data.(map[string]any)
	if d["node_id"] != "2" || d["node_type"] != "Panic" || d["exception_type"] != "panic" {
		t.Errorf("error data: %v", d)
	}
	if tb, _ := d["traceback"].([]any); len(tb) == 0 {
		t.Error("no traceback for a panic")
	}
	if in, _ := d["current_inputs"].(map[string]any); !reflect.DeepEqual(in["value"], []any{json.Number("3")}) {
		t.Errorf("current_inputs = %v", d["current_inputs"])
	}
	if ex, _ := d["executed"].([]any); !reflect.DeepEqual(ex, []any{"1"}) {
		t.Errorf("executed = %v, want [1]", d["executed"])
	}

	h = waitHistory(t, e, "fail")
	d = h.Status.Messages[len(h.Status.Messages)-1].Data.(map[string]any)
	if d["exception_message"] != "fail: value rejected" {
		t.Errorf("failure message = %v", d["exception_message"])
	}
	if h := waitHistory(t, e, "good"); h.Status.StatusStr != executor.StatusSuccess {
		t.Errorf("prompt after failures: %+v", h.Status)
	}
}

func TestBadPromptsGiveExecutionError(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	cases := []struct {
		name   string
		prompt graph.Prompt
		node   string
	}{
		{"unknown class", graph.Prompt{"1": node("Nope", map[string]any{}), "2": node("Sink", map[string]any{"value": graph.NewLink("1", 0)})}, "1"},
		{"missing required input", graph.Prompt{"1": node("Sink", map[string]any{})}, "1"},
		{"link to missing node", graph.Prompt{"1": node("Sink", map[string]any{"value": graph.NewLink("9", 0)})}, "1"},
		{"bad slot", graph.Prompt{"1": node("Const", map[string]any{"value": json.Number("1")}), "2": node("Sink", map[string]any{"value": graph.NewLink("1", 3)})}, "2"},
		{"bad literal", graph.Prompt{"1": node("Const", map[string]any{"value": "abc"}), "2": node("Sink", map[string]any{"value": graph.NewLink("1", 0)})}, "1"},
		{"cycle", graph.Prompt{
			"1": node("Add", map[string]any{"a": graph.NewLink("2", 0), "b": json.Number("1")}),
			"2": node("Add", map[string]any{"a": graph.NewLink("1", 0), "b": json.Number("1")}),
			"3": node("Sink", map[string]any{"value": graph.NewLink("2", 0)}),
		}, "1"},
		{"no outputs", graph.Prompt{"1": node("Const", map[string]any{"value": json.Number("1")})}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			entry, evs := execute(t, e, "p", tc.prompt)
			if entry.Status.StatusStr != executor.StatusError {
				t.Fatalf("status %+v", entry.Status)
			}
			var got *executor.ExecutionErrorData
			for _, ev := range evs {
				if d, ok := ev.Data.(executor.ExecutionErrorData); ok {
					got = &d
				}
			}
			if got == nil {
				t.Fatal("no execution_error event")
			}
			if got.NodeID != tc.node || got.ExceptionMessage == "" {
				t.Errorf("execution_error = %+v", got)
			}
		})
	}
}

func TestEventSequence(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	p := graph.Prompt{
		"1": node("Const", map[string]any{"value": json.Number("1")}),
		"2": node("Sink", map[string]any{"value": graph.NewLink("1", 0)}),
	}
	_, evs := execute(t, e, "p", p)
	var seq []string
	for _, ev := range evs {
		if ev.Type == executor.EventProgressState {
			continue
		}
		s := ev.Type
		if d, ok := ev.Data.(executor.ExecutingData); ok {
			if d.Node == nil {
				s += ":null"
			} else {
				s += ":" + *d.Node
			}
		}
		seq = append(seq, s)
		if ev.ClientID != "c1" {
			t.Errorf("%s targets %q, want the prompt's client", ev.Type, ev.ClientID)
		}
	}
	want := []string{"execution_start", "execution_cached", "executing:1", "executing:2", "executed", "execution_success", "executing:null"}
	for _, ev := range evs {
		if d, ok := ev.Data.(executor.ExecutingData); ok {
			b, _ := json.Marshal(d)
			w := `{"node":"1","display_node":"1","prompt_id":"p"}`
			if d.Node == nil {
				w = `{"node":null,"prompt_id":"p"}`
			} else if *d.Node != "1" {
				continue
			}
			if string(b) != w {
				t.Errorf("executing JSON %s, want %s", b, w)
			}
		}
	}
	if !slices.Equal(seq, want) {
		t.Errorf("events = %v\nwant %v", seq, want)
	}
	// Without a client id, send_sync events are broadcast and add_message events are
	// for no websocket client.
	sub := e.Subscribe()
	defer sub.Close()
	p["1"] = node("Const", map[string]any{"value": json.Number("2")}) // so that 2 runs again
	e.Execute(context.Background(), &executor.Job{ID: "q", Prompt: p})
	for _, ev := range collect(t, sub, "q") {
		d, isExecuting := ev.Data.(executor.ExecutingData)
		wantBroadcast := (isExecuting && d.Node != nil) || ev.Type == executor.EventExecuted || ev.Type == executor.EventProgressState
		if ev.ClientID != "" || ev.Broadcast != wantBroadcast {
			t.Errorf("%s: client %q broadcast %v", ev.Type, ev.ClientID, ev.Broadcast)
		}
	}
}

func TestRestartKeepsQueueAndHistory(t *testing.T) {
	fx := newFixture(t)
	path := filepath.Join(t.TempDir(), "q.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, fx, executor.Options{Queue: st})
	submit(t, e, "a", chain(1))
	submit(t, e, "b", chain(2))
	if _, err := e.Submit(context.Background(), &executor.Job{ID: "c", Prompt: chain(3)}, executor.PushOptions{Front: true}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Queue().Delete(context.Background(), "b"); err != nil || n != 1 {
		t.Fatalf("delete: %d %v", n, err)
	}
	st.Close() // no worker ran: everything is pending

	e2, _, stop := startWorker(t, fx, path)
	defer stop()
	ha, hc := waitHistory(t, e2, "a"), waitHistory(t, e2, "c")
	if ha.Status.StatusStr != executor.StatusSuccess || hc.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("statuses %v %v", ha.Status, hc.Status)
	}
	hist, err := e2.Queue().ListHistory(context.Background(), -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, h := range hist {
		order = append(order, h.Prompt.ID)
	}
	if !slices.Equal(order, []string{"c", "a"}) {
		t.Errorf("history order %v, want front prompt c first", order)
	}
	if _, err := e2.Queue().GetHistory(context.Background(), "b"); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("deleted prompt ran: %v", err)
	}
}

func TestStopHandsBackRunningPrompt(t *testing.T) {
	fx := newFixture(t)
	path := filepath.Join(t.TempDir(), "q.db")
	e, _, stop := startWorker(t, fx, path)
	submit(t, e, "long", graph.Prompt{"1": node("Blocker", map[string]any{"steps": json.Number("0")})})
	select {
	case <-fx.started:
	case <-time.After(10 * time.Second):
		t.Fatal("blocker never started")
	}
	stop() // the worker stops mid-prompt: no history, the prompt goes back to pending

	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	running, pending, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 0 || len(pending) != 1 || pending[0].ID != "long" {
		t.Fatalf("after stop: running %v pending %v", running, pending)
	}
	if _, err := st.GetHistory(context.Background(), "long"); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("handed-back prompt has a history entry: %v", err)
	}
}

func TestProgressState(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	_, evs := execute(t, e, "p", chain(1))
	var last executor.ProgressStateData
	for _, ev := range evs {
		if d, ok := ev.Data.(executor.ProgressStateData); ok {
			last = d
		}
	}
	if len(last.Nodes) != 5 {
		t.Fatalf("final progress_state has %d nodes, want 5", len(last.Nodes))
	}
	for id, np := range last.Nodes {
		if np.State != executor.NodeFinished || np.NodeID != id || np.PromptID != "p" || np.DisplayNodeID != id || np.RealNodeID != id {
			t.Errorf("node %s: %+v", id, np)
		}
	}
	b, _ := json.Marshal(last.Nodes["1"])
	want := `{"value":1,"max":1,"state":"finished","node_id":"1","prompt_id":"p","display_node_id":"1","parent_node_id":null,"real_node_id":"1"}`
	if string(b) != want {
		t.Errorf("progress_state node JSON:\n got %s\nwant %s", b, want)
	}
}

func TestHistoryJSONShape(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{Now: func() time.Time { return time.UnixMilli(1700000000000) }})
	p := graph.Prompt{
		"1": node("Const", map[string]any{"value": json.Number("4")}),
		"2": node("Sink", map[string]any{"value": graph.NewLink("1", 0)}),
	}
	entry := e.Execute(context.Background(), &executor.Job{Number: 7, ID: "abc", Prompt: p, ExtraData: map[string]any{"client_id": "c1"}, Outputs: []string{"2"}, Sensitive: map[string]any{"api_key_comfy_org": "k"}})
	b, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"prompt":[7,"abc",{"1":{"class_type":"Const","inputs":{"value":4}},"2":{"class_type":"Sink","inputs":{"value":["1",0]}}},{"client_id":"c1"},["2"]],` +
		`"outputs":{"2":{"values":[4]}},` +
		`"status":{"status_str":"success","completed":true,"messages":[["execution_start",{"prompt_id":"abc","timestamp":1700000000000}],["execution_cached",{"nodes":[],"prompt_id":"abc","timestamp":1700000000000}],["execution_success",{"prompt_id":"abc","timestamp":1700000000000}]]},` +
		`"meta":{"2":{"node_id":"2","display_node":"2","parent_node":null,"real_node_id":"2"}}}`
	if string(b) != want {
		t.Errorf("history JSON:\n got %s\nwant %s", b, want)
	}
}

func TestGeneratedPromptID(t *testing.T) {
	fx := newFixture(t)
	e, _, stop := startWorker(t, fx, filepath.Join(t.TempDir(), "q.db"))
	defer stop()
	// Wait until the worker is up, then check that a second one is refused.
	submit(t, e, "first", chain(1))
	waitHistory(t, e, "first")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.Run(ctx); err == nil { // an accepted Run would return nil at the timeout
		t.Error("a second Run was accepted")
	}
	job := &executor.Job{Prompt: chain(1)}
	if _, err := e.Submit(context.Background(), job, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(job.ID) {
		t.Fatalf("generated id %q is not a v4 UUID", job.ID)
	}
	if h := waitHistory(t, e, job.ID); h.Status.StatusStr != executor.StatusSuccess {
		t.Errorf("status %+v", h.Status)
	}
	if a, b := executor.NewPromptID(), executor.NewPromptID(); a == b {
		t.Error("two generated ids are equal")
	}
}

func TestPartialRunKeepsOtherOutputsCached(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	var entry *executor.HistoryEntry
	run := func(id string, outputs ...string) []executor.Event {
		sub := e.Subscribe()
		defer sub.Close()
		entry = e.Execute(context.Background(), &executor.Job{ID: id, Prompt: chain(10), Outputs: outputs, ExtraData: map[string]any{"client_id": "c1"}})
		return collect(t, sub, id)
	}
	run("full")
	fx.runs.take()
	// Only output 3: the 4 → 5 branch is neither run nor evicted, and is reported cached.
	evs := run("partial", "3")
	if got := fx.runs.take(); len(got) != 0 {
		t.Fatalf("partial run executed %v", got)
	}
	// As ComfyUI's history, the outputs list every node of the prompt with a cached UI.
	if len(entry.Outputs) != 2 || entry.Outputs["5"] == nil || entry.Meta["5"].NodeID != "5" {
		t.Errorf("partial run outputs = %v, meta = %v", entry.Outputs, entry.Meta)
	}
	if got := cachedNodes(t, evs); !slices.Equal(got, []string{"1", "2", "3", "4", "5"}) {
		t.Errorf("execution_cached = %v, want every cached node of the prompt", got)
	}
	run("other", "5")
	if got := fx.runs.take(); len(got) != 0 {
		t.Errorf("the branch left out of the partial run was evicted: ran %v", got)
	}
}

func TestUnencodableUIIsANodeError(t *testing.T) {
	reg := nodes.NewRegistry()
	nan := &fake{
		schema: &graph.Schema{Name: "NaNUI", OutputNode: true},
		run: func(context.Context, *nodes.Env, nodes.Inputs) (nodes.Result, error) {
			return nodes.Result{UI: map[string]any{"v": []any{math.NaN()}}}, nil
		},
	}
	if err := reg.Register(nan); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "q.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := executor.New(executor.Options{Registry: reg, Queue: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	if _, err := e.Submit(ctx, &executor.Job{ID: "n", Prompt: graph.Prompt{"1": node("NaNUI", nil)}}, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	h := waitHistory(t, e, "n")
	if h.Status.StatusStr != executor.StatusError {
		t.Fatalf("status %+v", h.Status)
	}
	d := h.Status.Messages[len(h.Status.Messages)-1].Data.(map[string]any)
	if !strings.Contains(d["exception_message"].(string), "not valid JSON") {
		t.Errorf("message %v", d["exception_message"])
	}
	if running, _, _ := e.Queue().List(ctx); len(running) != 0 {
		t.Errorf("prompt still running: %v", running)
	}
}

// ackOnceFails is a queue whose first Ack fails, like a full disk that recovers.
type ackOnceFails struct {
	*store.Store
	failed bool
}

func (q *ackOnceFails) Ack(ctx context.Context, id string, e *executor.HistoryEntry) error {
	if !q.failed {
		q.failed = true
		return errors.New("disk full")
	}
	return q.Store.Ack(ctx, id, e)
}

func TestFailedHistoryWriteDoesNotLeavePromptRunning(t *testing.T) {
	fx := newFixture(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "q.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := newEngine(t, fx, executor.Options{Queue: &ackOnceFails{Store: st}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	submit(t, e, "p", chain(1))
	h := waitHistory(t, e, "p")
	if h.Status.StatusStr != executor.StatusError || len(h.Outputs) != 0 {
		t.Fatalf("history %+v", h)
	}
	d := h.Status.Messages[0].Data.(map[string]any)
	if !strings.Contains(d["exception_message"].(string), "disk full") {
		t.Errorf("message %v", d["exception_message"])
	}
	if running, _, _ := e.Queue().List(ctx); len(running) != 0 {
		t.Errorf("prompt still running: %v", running)
	}
}

// Execute (the CLI's path) treats a cancelled ctx, Ctrl-C, as an interrupt.
func TestExecuteCancelIsInterrupt(t *testing.T) {
	fx := newFixture(t)
	e := newEngine(t, fx, executor.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-fx.started
		if e.Running() == "" {
			t.Error("Running() is empty while a prompt runs")
		}
		cancel()
	}()
	h := e.Execute(ctx, &executor.Job{ID: "x", Prompt: graph.Prompt{"1": node("Blocker", map[string]any{"steps": json.Number("0")})}})
	last := h.Status.Messages[len(h.Status.Messages)-1]
	if h.Status.StatusStr != executor.StatusError || last.Event != executor.EventExecutionInterrupted {
		t.Fatalf("status %s, last %s", h.Status.StatusStr, last.Event)
	}
	if e.Running() != "" {
		t.Error("Running() still set after the prompt ended")
	}
}
