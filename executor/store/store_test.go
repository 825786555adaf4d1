package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

func openTemp(t *testing.T, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func job(id string) *executor.Job {
	return &executor.Job{
		ID: id,
		Prompt: graph.Prompt{"1": {ClassType: "Foo", Inputs: map[string]any{
			"seed": json.Number("18446744073709551615"), "link": graph.NewLink("2", 0)}}},
		ExtraData: map[string]any{"client_id": "c1"},
		Outputs:   []string{"1"},
		Sensitive: map[string]any{"api_key_comfy_org": "secret"},
	}
}

func push(t *testing.T, s *Store, id string, opts executor.PushOptions) float64 {
	t.Helper()
	n, err := s.Push(context.Background(), job(id), opts)
	if err != nil {
		t.Fatalf("push %s: %v", id, err)
	}
	return n
}

func pendingIDs(t *testing.T, s *Store) []string {
	t.Helper()
	_, pending, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, j := range pending {
		ids = append(ids, j.ID)
	}
	return ids
}

func lease(t *testing.T, s *Store) *executor.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	j, err := s.Lease(ctx)
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	return j
}

func entry(j *executor.Job, status string) *executor.HistoryEntry {
	return &executor.HistoryEntry{
		Prompt:  *j,
		Outputs: map[string]map[string]any{"1": {"images": []any{map[string]any{"filename": "a.png"}}}},
		Status:  executor.Status{StatusStr: status, Completed: status == executor.StatusSuccess, Messages: []executor.Message{{Event: "execution_start", Data: map[string]any{"prompt_id": j.ID}}}},
		Meta:    map[string]executor.NodeMeta{"1": {NodeID: "1", DisplayNode: "1", RealNodeID: "1"}},
	}
}

func TestNumbersAndFront(t *testing.T) {
	s, _ := openTemp(t, Options{})
	if n := push(t, s, "a", executor.PushOptions{}); n != 0 {
		t.Errorf("first number = %v, want 0", n)
	}
	if n := push(t, s, "b", executor.PushOptions{}); n != 1 {
		t.Errorf("second number = %v, want 1", n)
	}
	if n := push(t, s, "c", executor.PushOptions{Front: true}); n != -2 {
		t.Errorf("front number = %v, want -2", n)
	}
	if n := push(t, s, "d", executor.PushOptions{Front: true}); n != -3 {
		t.Errorf("front number = %v, want -3", n)
	}
	given := 0.5
	if n := push(t, s, "e", executor.PushOptions{Number: &given}); n != 0.5 {
		t.Errorf("given number = %v, want 0.5", n)
	}
	if n := push(t, s, "f", executor.PushOptions{}); n != 4 {
		t.Errorf("number after a given one = %v, want 4 (counter untouched)", n)
	}
	want := []string{"d", "c", "a", "e", "b", "f"}
	if got := pendingIDs(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("pending order = %v, want %v", got, want)
	}
	for _, id := range want {
		if j := lease(t, s); j.ID != id {
			t.Fatalf("leased %s, want %s", j.ID, id)
		}
	}
}

func TestPushErrors(t *testing.T) {
	s, _ := openTemp(t, Options{})
	push(t, s, "a", executor.PushOptions{})
	if _, err := s.Push(context.Background(), job("a"), executor.PushOptions{}); !errors.Is(err, executor.ErrDuplicate) {
		t.Errorf("duplicate pending push: err = %v, want ErrDuplicate", err)
	}
	lease(t, s)
	if _, err := s.Push(context.Background(), job("a"), executor.PushOptions{}); !errors.Is(err, executor.ErrDuplicate) {
		t.Errorf("duplicate running push: err = %v, want ErrDuplicate", err)
	}
	if _, err := s.Push(context.Background(), &executor.Job{}, executor.PushOptions{}); err == nil {
		t.Error("push without id: no error")
	}
	nan := 0.0
	nan = nan / nan
	if _, err := s.Push(context.Background(), job("n"), executor.PushOptions{Number: &nan}); err == nil {
		t.Error("push with NaN number: no error")
	}
}

func TestDeleteAndClear(t *testing.T) {
	s, _ := openTemp(t, Options{})
	for _, id := range []string{"a", "b", "c", "d"} {
		push(t, s, id, executor.PushOptions{})
	}
	run := lease(t, s) // a runs
	n, err := s.Delete(context.Background(), "a", "c", "zz")
	if err != nil || n != 1 {
		t.Fatalf("delete = %d, %v; want 1 (running and unknown ids ignored)", n, err)
	}
	if got := pendingIDs(t, s); !reflect.DeepEqual(got, []string{"b", "d"}) {
		t.Fatalf("pending after delete = %v", got)
	}
	if err := s.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := pendingIDs(t, s); len(got) != 0 {
		t.Fatalf("pending after clear = %v", got)
	}
	running, _, _ := s.List(context.Background())
	if len(running) != 1 || running[0].ID != run.ID {
		t.Fatalf("running after clear = %v, want %s", running, run.ID)
	}
	if r, _ := s.Pending(context.Background()); r != 1 {
		t.Errorf("queue remaining = %d, want 1", r)
	}
	// The deleted id may be pushed again.
	push(t, s, "c", executor.PushOptions{})
}

func TestDurability(t *testing.T) {
	s, path := openTemp(t, Options{})
	push(t, s, "a", executor.PushOptions{})
	push(t, s, "b", executor.PushOptions{})
	push(t, s, "c", executor.PushOptions{Front: true})
	j := lease(t, s) // c
	if j.Sensitive["api_key_comfy_org"] != "secret" {
		t.Errorf("leased job lost its sensitive data: %v", j.Sensitive)
	}
	want := entry(j, executor.StatusSuccess)
	if err := s.Ack(context.Background(), j.ID, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := pendingIDs(t, s2); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("pending after reopen = %v", got)
	}
	got, err := s2.GetHistory(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(got)
	want.Prompt.Sensitive = nil
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("history after reopen:\n got %s\nwant %s", gb, wb)
	}
	if _, ok := got.Prompt.Prompt["1"].Inputs["seed"].(json.Number); !ok {
		t.Errorf("seed decoded as %T, want json.Number", got.Prompt.Prompt["1"].Inputs["seed"])
	}
	// The counter survives too: the next number follows the last one given.
	if n := push(t, s2, "d", executor.PushOptions{}); n != 3 {
		t.Errorf("number after reopen = %v, want 3", n)
	}
}

func TestRecoverRunning(t *testing.T) {
	s, path := openTemp(t, Options{MaxAttempts: 2})
	push(t, s, "a", executor.PushOptions{})
	push(t, s, "b", executor.PushOptions{})
	lease(t, s) // a is running when the "process dies"
	s.Close()

	s, err := Open(path, Options{MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := pendingIDs(t, s); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("pending after first crash = %v, want a requeued first", got)
	}
	if j := lease(t, s); j.ID != "a" || j.Attempts != 2 {
		t.Fatalf("leased %s attempt %d, want a attempt 2", j.ID, j.Attempts)
	}
	s.Close()

	s, err = Open(path, Options{MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := pendingIDs(t, s); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("pending after second crash = %v, want only b", got)
	}
	h, err := s.GetHistory(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if h.Status.StatusStr != executor.StatusError || len(h.Status.Messages) != 1 || h.Status.Messages[0].Event != executor.EventExecutionError {
		t.Errorf("crashed prompt history = %+v", h.Status)
	}
}

func TestFailRequeuesAtFront(t *testing.T) {
	s, _ := openTemp(t, Options{})
	push(t, s, "a", executor.PushOptions{})
	push(t, s, "b", executor.PushOptions{})
	j := lease(t, s)
	if err := s.Fail(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	if j := lease(t, s); j.ID != "a" || j.Attempts != 1 {
		t.Fatalf("after fail leased %s attempt %d, want a attempt 1", j.ID, j.Attempts)
	}
	if err := s.Fail(context.Background(), "nope"); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("fail unknown: %v", err)
	}
	if err := s.Ack(context.Background(), "nope", &executor.HistoryEntry{}); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("ack unknown: %v", err)
	}
}

func TestLeaseBlocksUntilPush(t *testing.T) {
	s, _ := openTemp(t, Options{})
	got := make(chan string, 1)
	go func() {
		j, err := s.Lease(context.Background())
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- j.ID
	}()
	select {
	case id := <-got:
		t.Fatalf("lease returned %q from an empty queue", id)
	case <-time.After(20 * time.Millisecond):
	}
	push(t, s, "a", executor.PushOptions{})
	select {
	case id := <-got:
		if id != "a" {
			t.Fatalf("lease = %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lease did not wake on push")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Lease(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("lease with cancelled ctx: %v", err)
	}
	go func() { time.Sleep(10 * time.Millisecond); s.Close() }()
	if _, err := s.Lease(context.Background()); !errors.Is(err, executor.ErrClosed) {
		t.Errorf("lease on closed store: %v", err)
	}
}

func TestHistoryPaging(t *testing.T) {
	s, _ := openTemp(t, Options{MaxHistory: 4})
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if err := s.PutHistory(ctx, entry(job(id), executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	// a was evicted (MaxHistory 4); replacing c keeps its place.
	if err := s.PutHistory(ctx, entry(job("c"), executor.StatusError)); err != nil {
		t.Fatal(err)
	}
	ids := func(es []*executor.HistoryEntry) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, e.Prompt.ID)
		}
		return out
	}
	cases := []struct {
		name             string
		maxItems, offset int
		want             []string
	}{
		{"all", -1, -1, []string{"b", "c", "d", "e"}},
		{"last two", 2, -1, []string{"d", "e"}},
		{"more than there are", 10, -1, []string{"b", "c", "d", "e"}},
		{"offset", -1, 1, []string{"c", "d", "e"}},
		{"offset and max", 2, 1, []string{"c", "d"}},
		{"zero items", 0, -1, []string{}},
		{"offset past end", -1, 9, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListHistory(ctx, tc.maxItems, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids(got), tc.want) {
				t.Errorf("got %v, want %v", ids(got), tc.want)
			}
		})
	}
	if h, _ := s.GetHistory(ctx, "c"); h.Status.StatusStr != executor.StatusError {
		t.Errorf("replaced entry not updated")
	}
	if _, err := s.GetHistory(ctx, "a"); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("evicted entry: %v", err)
	}
	if err := s.DeleteHistory(ctx, "c", "zz"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListHistory(ctx, 2, -1); !reflect.DeepEqual(ids(got), []string{"d", "e"}) {
		t.Errorf("after delete: %v", ids(got))
	}
	if got, _ := s.ListHistory(ctx, -1, -1); !reflect.DeepEqual(ids(got), []string{"b", "d", "e"}) {
		t.Errorf("after delete: %v", ids(got))
	}
	if err := s.ClearHistory(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListHistory(ctx, 5, -1); len(got) != 0 {
		t.Errorf("after clear: %v", ids(got))
	}
}

func TestConcurrentPushLease(t *testing.T) {
	s, _ := openTemp(t, Options{})
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Push(context.Background(), job("p"+strconv.Itoa(i)), executor.PushOptions{Front: i%3 == 0})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	numbers := map[float64]bool{}
	for range n {
		j := lease(t, s)
		if seen[j.ID] {
			t.Fatalf("%s leased twice", j.ID)
		}
		seen[j.ID] = true
		if numbers[j.Number] {
			t.Fatalf("number %v given twice", j.Number)
		}
		numbers[j.Number] = true
		if err := s.Ack(context.Background(), j.ID, entry(j, executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := s.Pending(context.Background()); r != 0 {
		t.Errorf("remaining %d", r)
	}
	if h, _ := s.ListHistory(context.Background(), -1, -1); len(h) != n {
		t.Errorf("history has %d entries, want %d", len(h), n)
	}
}
