// Package queuetest is the conformance suite of executor.Queue: every rule of the
// Queue contract (order and numbers, front and explicit numbers, delete and clear,
// pushing an id again, restarts, expired leases and retirement after crash loops,
// hand-backs, sensitive data, history paging and bound, closing) as a test that each implementation runs,
// the way testing/iotest checks io implementations:
//
//	func TestQueueConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T) queuetest.Opener {
//			path := filepath.Join(t.TempDir(), "queue.db")
//			return func(t *testing.T, o queuetest.Options) executor.Queue {
//				s, err := store.Open(path, store.Options{MaxAttempts: o.MaxAttempts, MaxHistory: o.MaxHistory})
//				...
//			}
//		})
//	}
//
// It imports only executor and graph, so a clustered implementation runs the same
// table as the embedded one.
package queuetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// Options are the implementation options the suite sets; zero means the
// implementation's default (executor.DefaultMaxAttempts, executor.DefaultMaxHistory).
type Options struct {
	MaxAttempts int
	MaxHistory  int
}

// Opener opens the queue under test on one durable state. Each call must open that
// same state again once the queue it returned before is closed, as a restarted process
// does (bbolt: the same file; a broker: the same stream and worker name), and it must
// fail t rather than return nil. The suite closes every queue it opens.
type Opener func(t *testing.T, opts Options) executor.Queue

// Run runs the suite; newState is called once per subtest and returns an Opener over
// a fresh, empty state.
func Run(t *testing.T, newState func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"NumbersAndFront", testNumbersAndFront},
		{"FirstFrontIsZero", testFirstFrontIsZero},
		{"PushErrors", testPushErrors},
		{"DeleteAndClear", testDeleteAndClear},
		{"AckWritesHistory", testAckWritesHistory},
		{"PushAgain", testPushAgain},
		{"FailKeepsSlot", testFailKeepsSlot},
		{"LeaseBlocks", testLeaseBlocks},
		{"Restart", testRestart},
		{"ExpiredLeaseKeepsSlot", testExpiredLeaseKeepsSlot},
		{"RetireAfterCrashLoop", testRetireAfterCrashLoop},
		{"SensitiveData", testSensitiveData},
		{"HistoryPaging", testHistoryPaging},
		{"Closed", testClosed},
		{"ConcurrentPushLease", testConcurrentPushLease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newState(t)) })
	}
}

// open opens the state and closes the queue when the test ends.
func open(t *testing.T, o Opener, opts Options) executor.Queue {
	t.Helper()
	q := o(t, opts)
	if q == nil {
		t.Fatal("queuetest: the opener returned a nil queue")
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func ctx() context.Context { return context.Background() }

// job is a prompt with a 64-bit seed, a link, a client and sensitive data.
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

func push(t *testing.T, q executor.Queue, id string, opts executor.PushOptions) float64 {
	t.Helper()
	j := job(id)
	n, err := q.Push(ctx(), j, opts)
	if err != nil {
		t.Fatalf("push %s: %v", id, err)
	}
	if j.Number != n {
		t.Fatalf("push %s returned %v but set job.Number %v", id, n, j.Number)
	}
	return n
}

func lease(t *testing.T, q executor.Queue) *executor.Job {
	t.Helper()
	c, cancel := context.WithTimeout(ctx(), 10*time.Second)
	defer cancel()
	j, err := q.Lease(c)
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	return j
}

func ids(jobs []*executor.Job) []string {
	out := []string{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

func pendingIDs(t *testing.T, q executor.Queue) []string {
	t.Helper()
	_, pending, err := q.List(ctx())
	if err != nil {
		t.Fatal(err)
	}
	return ids(pending)
}

func runningIDs(t *testing.T, q executor.Queue) []string {
	t.Helper()
	running, _, err := q.List(ctx())
	if err != nil {
		t.Fatal(err)
	}
	return ids(running)
}

func remaining(t *testing.T, q executor.Queue) int {
	t.Helper()
	n, err := q.Remaining(ctx())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func entry(j *executor.Job, status string) *executor.HistoryEntry {
	return &executor.HistoryEntry{
		Prompt:  *j,
		Outputs: map[string]map[string]any{"1": {"images": []any{map[string]any{"filename": "a.png"}}}},
		Status: executor.Status{StatusStr: status, Completed: status == executor.StatusSuccess,
			Messages: []executor.Message{{Event: "execution_start", Data: map[string]any{"prompt_id": j.ID}}}},
		Meta: map[string]executor.NodeMeta{"1": {NodeID: "1", DisplayNode: "1", RealNodeID: "1"}},
	}
}

func historyIDs(t *testing.T, q executor.Queue, maxItems, offset int) []string {
	t.Helper()
	es, err := q.ListHistory(ctx(), maxItems, offset)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, e.Prompt.ID)
	}
	return out
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// testNumbersAndFront: numbers from the counter, negated for front, explicit numbers
// as given without touching the counter; lease order by number, then push order.
func testNumbersAndFront(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	given, same := 0.5, 1.0
	steps := []struct {
		id   string
		opts executor.PushOptions
		want float64
	}{
		{"a", executor.PushOptions{}, 0},
		{"b", executor.PushOptions{}, 1},
		{"c", executor.PushOptions{Front: true}, -2},
		{"d", executor.PushOptions{Front: true}, -3},
		{"e", executor.PushOptions{Number: &given}, 0.5},
		{"f", executor.PushOptions{}, 4},                           // the counter skipped e
		{"g", executor.PushOptions{Number: &same, Front: true}, 1}, // Number wins over Front
	}
	for _, s := range steps {
		if n := push(t, q, s.id, s.opts); n != s.want {
			t.Fatalf("push %s: number %v, want %v", s.id, n, s.want)
		}
	}
	want := []string{"d", "c", "a", "e", "b", "g", "f"} // g ties with b: push order
	equal(t, "pending order", pendingIDs(t, q), want)
	equal(t, "remaining", remaining(t, q), len(want))
	numbers := map[string]float64{}
	for _, s := range steps {
		numbers[s.id] = s.want
	}
	for i, id := range want {
		j := lease(t, q)
		if j.ID != id || j.Number != numbers[id] || j.Attempts != 1 {
			t.Fatalf("lease %d: %s number %v attempt %d, want %s number %v attempt 1", i, j.ID, j.Number, j.Attempts, id, numbers[id])
		}
	}
	equal(t, "running", len(runningIDs(t, q)), len(want))
	equal(t, "remaining with every job running", remaining(t, q), len(want))
}

// testFirstFrontIsZero: a front push on a new queue gets 0, not -0 (ComfyUI's number is
// a Python int; -0 would be written "-0" in JSON).
func testFirstFrontIsZero(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	if n := push(t, q, "a", executor.PushOptions{Front: true}); n != 0 || math.Signbit(n) {
		t.Fatalf("first front number = %v, want 0", n)
	}
	if j := lease(t, q); math.Signbit(j.Number) {
		t.Fatalf("leased number %v, want 0", j.Number)
	}
}

// testPushErrors: ids are unique among pending and running jobs only; bad jobs and
// numbers are refused and change nothing.
func testPushErrors(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	if _, err := q.Push(ctx(), job("a"), executor.PushOptions{}); !errors.Is(err, executor.ErrDuplicate) {
		t.Errorf("duplicate pending push: err = %v, want ErrDuplicate", err)
	}
	a := lease(t, q)
	if _, err := q.Push(ctx(), job("a"), executor.PushOptions{Front: true}); !errors.Is(err, executor.ErrDuplicate) {
		t.Errorf("duplicate running push: err = %v, want ErrDuplicate", err)
	}
	if _, err := q.Push(ctx(), &executor.Job{}, executor.PushOptions{}); err == nil {
		t.Error("push without id: no error")
	}
	long := job(string(bytes.Repeat([]byte("x"), executor.MaxIDLength+1)))
	if _, err := q.Push(ctx(), long, executor.PushOptions{}); !errors.Is(err, executor.ErrInvalidID) {
		t.Errorf("push with a %d-byte id: err = %v, want ErrInvalidID", len(long.ID), err)
	}
	longest := string(bytes.Repeat([]byte("y"), executor.MaxIDLength))
	if _, err := q.Push(ctx(), job(longest), executor.PushOptions{}); err != nil {
		t.Errorf("push with a %d-byte id: %v", executor.MaxIDLength, err)
	} else if n, err := q.Delete(ctx(), longest); n != 1 || err != nil {
		t.Errorf("delete of the %d-byte id: %d, %v", executor.MaxIDLength, n, err)
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := q.Push(ctx(), job("n"), executor.PushOptions{Number: &bad}); err == nil {
			t.Errorf("push with number %v: no error", bad)
		}
	}
	equal(t, "remaining after refused pushes", remaining(t, q), 1)
	if n := push(t, q, "b", executor.PushOptions{}); n != 2 {
		t.Errorf("number after refused pushes and the longest id = %v, want 2", n)
	}
	// A finished id and a deleted id may be pushed again.
	if err := q.Ack(ctx(), a.ID, entry(a, executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	push(t, q, "a", executor.PushOptions{})
	if n, err := q.Delete(ctx(), "b"); err != nil || n != 1 {
		t.Fatalf("delete b = %d, %v", n, err)
	}
	push(t, q, "b", executor.PushOptions{})
	equal(t, "pending", pendingIDs(t, q), []string{"a", "b"})
}

// testDeleteAndClear: both act on pending jobs only and leave the history alone.
func testDeleteAndClear(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	if err := q.PutHistory(ctx(), entry(job("h"), executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		push(t, q, id, executor.PushOptions{})
	}
	run := lease(t, q) // a runs
	n, err := q.Delete(ctx(), "a", "c", "zz", "h")
	if err != nil || n != 1 {
		t.Fatalf("delete = %d, %v; want 1 (running, finished and unknown ids ignored)", n, err)
	}
	equal(t, "pending after delete", pendingIDs(t, q), []string{"b", "d"})
	if n, err := q.Delete(ctx()); err != nil || n != 0 {
		t.Fatalf("delete of nothing = %d, %v", n, err)
	}
	if err := q.Clear(ctx()); err != nil {
		t.Fatal(err)
	}
	equal(t, "pending after clear", pendingIDs(t, q), []string{})
	equal(t, "running after clear", runningIDs(t, q), []string{run.ID})
	equal(t, "remaining after clear", remaining(t, q), 1)
	equal(t, "history after delete and clear", historyIDs(t, q, -1, -1), []string{"h"})
	// The running job is still leased: it can be acked.
	if err := q.Ack(ctx(), run.ID, entry(run, executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
}

// testAckWritesHistory: Ack moves a running job into the history in one step; a job
// that is not running cannot be acked.
func testAckWritesHistory(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	push(t, q, "b", executor.PushOptions{})
	j := lease(t, q)
	if err := q.Ack(ctx(), "b", entry(job("b"), executor.StatusSuccess)); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("ack of a pending job: %v, want ErrNotLeased", err)
	}
	if err := q.Ack(ctx(), "nope", &executor.HistoryEntry{}); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("ack of an unknown job: %v, want ErrNotLeased", err)
	}
	if _, err := q.GetHistory(ctx(), "a"); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("history of a running job: %v, want ErrNotFound", err)
	}
	want := entry(j, executor.StatusError)
	if err := q.Ack(ctx(), j.ID, want); err != nil {
		t.Fatal(err)
	}
	equal(t, "running after ack", runningIDs(t, q), []string{})
	equal(t, "remaining after ack", remaining(t, q), 1)
	got, err := q.GetHistory(ctx(), "a")
	if err != nil {
		t.Fatal(err)
	}
	want.Prompt.Sensitive = nil
	sameEntry(t, got, want)
	if err := q.Ack(ctx(), j.ID, entry(j, executor.StatusSuccess)); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("second ack: %v, want ErrNotLeased", err)
	}
	if h, _ := q.GetHistory(ctx(), "a"); h == nil || h.Status.StatusStr != executor.StatusError {
		t.Errorf("a refused ack changed the history: %+v", h)
	}
}

// testPushAgain: a finished id pushed again keeps its history entry while it waits and
// runs, and its new entry replaces the old one in place; a deleted id pushed again
// takes a new number and goes behind the jobs pushed before it.
func testPushAgain(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	a := lease(t, q)
	if err := q.Ack(ctx(), a.ID, entry(a, executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	if err := q.PutHistory(ctx(), entry(job("x"), executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	if n := push(t, q, "a", executor.PushOptions{}); n != 1 {
		t.Fatalf("finished id pushed again got number %v, want 1", n)
	}
	push(t, q, "b", executor.PushOptions{})
	equal(t, "pending", pendingIDs(t, q), []string{"a", "b"})
	equal(t, "history while a waits again", historyIDs(t, q, -1, -1), []string{"a", "x"})
	if h, err := q.GetHistory(ctx(), "a"); err != nil || h.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("history of a while it waits again = %+v, %v", h, err)
	}
	if n, err := q.Delete(ctx(), "b"); err != nil || n != 1 {
		t.Fatalf("delete b = %d, %v", n, err)
	}
	push(t, q, "c", executor.PushOptions{})
	if n := push(t, q, "b", executor.PushOptions{}); n != 4 {
		t.Fatalf("deleted id pushed again got number %v, want 4", n)
	}
	equal(t, "pending after b came back", pendingIDs(t, q), []string{"a", "c", "b"})
	a = lease(t, q)
	if a.ID != "a" || a.Attempts != 1 {
		t.Fatalf("leased %s attempt %d, want a attempt 1 (attempts start again)", a.ID, a.Attempts)
	}
	if err := q.Ack(ctx(), a.ID, entry(a, executor.StatusError)); err != nil {
		t.Fatal(err)
	}
	equal(t, "history after the second run", historyIDs(t, q, -1, -1), []string{"a", "x"})
	if h, err := q.GetHistory(ctx(), "a"); err != nil || h.Status.StatusStr != executor.StatusError {
		t.Fatalf("history of a after its second run = %+v, %v", h, err)
	}
}

// sameEntry compares history entries by their JSON form, the form clients see.
func sameEntry(t *testing.T, got, want *executor.HistoryEntry) {
	t.Helper()
	gb, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Fatalf("history entry\n got %s\nwant %s", gb, wb)
	}
	if _, ok := got.Prompt.Prompt["1"].Inputs["seed"].(json.Number); !ok {
		t.Fatalf("seed decoded as %T, want json.Number (every digit kept)", got.Prompt.Prompt["1"].Inputs["seed"])
	}
}

// testFailKeepsSlot: a handed-back job is pending again where it was and the attempt
// does not count.
func testFailKeepsSlot(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	push(t, q, "b", executor.PushOptions{})
	j := lease(t, q)
	push(t, q, "c", executor.PushOptions{}) // pushed while a runs
	if err := q.Fail(ctx(), j.ID); err != nil {
		t.Fatal(err)
	}
	equal(t, "pending after fail", pendingIDs(t, q), []string{"a", "b", "c"})
	if j := lease(t, q); j.ID != "a" || j.Attempts != 1 || j.Number != 0 {
		t.Fatalf("after fail leased %s number %v attempt %d, want a number 0 attempt 1", j.ID, j.Number, j.Attempts)
	}
	if err := q.Fail(ctx(), "b"); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("fail of a pending job: %v, want ErrNotLeased", err)
	}
	if err := q.Fail(ctx(), "nope"); !errors.Is(err, executor.ErrNotLeased) {
		t.Errorf("fail of an unknown job: %v, want ErrNotLeased", err)
	}
}

// testLeaseBlocks: Lease waits for a push or a hand-back, and gives up on ctx or Close.
func testLeaseBlocks(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	type result struct {
		id  string
		err error
	}
	got := make(chan result, 1)
	leaseAsync := func() {
		go func() {
			j, err := q.Lease(ctx())
			if err != nil {
				got <- result{err: err}
				return
			}
			got <- result{id: j.ID}
		}()
		// Not a synchronisation: a Lease that returns at all here is wrong.
		select {
		case r := <-got:
			t.Fatalf("lease returned %q (%v) from an empty queue", r.id, r.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	wait := func(what string) result {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(10 * time.Second):
			t.Fatalf("a blocked lease did not return on %s", what)
		}
		return result{}
	}
	leaseAsync()
	push(t, q, "a", executor.PushOptions{})
	if r := wait("push"); r.id != "a" {
		t.Fatalf("lease woken by a push = %+v, want a", r)
	}
	leaseAsync()
	if err := q.Fail(ctx(), "a"); err != nil {
		t.Fatal(err)
	}
	if r := wait("fail"); r.id != "a" {
		t.Fatalf("lease woken by a hand-back = %+v, want a", r)
	}

	c, cancel := context.WithCancel(ctx())
	cancel()
	if _, err := q.Lease(c); !errors.Is(err, context.Canceled) {
		t.Errorf("lease with a cancelled ctx: %v", err)
	}
	c, cancel = context.WithTimeout(ctx(), 10*time.Millisecond)
	defer cancel()
	if _, err := q.Lease(c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lease past its deadline: %v", err)
	}
	leaseAsync()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if r := wait("close"); !errors.Is(r.err, executor.ErrClosed) {
		t.Errorf("blocked lease on close = %+v, want ErrClosed", r)
	}
}

// testRestart: pending jobs and their order, the counter, the history and sensitive
// data survive Close and a new open.
func testRestart(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	push(t, q, "b", executor.PushOptions{})
	push(t, q, "c", executor.PushOptions{Front: true})
	given := 0.5
	push(t, q, "d", executor.PushOptions{Number: &given})
	j := lease(t, q) // c
	want := entry(j, executor.StatusSuccess)
	if err := q.Ack(ctx(), j.ID, want); err != nil {
		t.Fatal(err)
	}
	if err := q.PutHistory(ctx(), entry(job("x"), executor.StatusError)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = open(t, o, Options{})
	equal(t, "pending after reopen", pendingIDs(t, q), []string{"a", "d", "b"})
	equal(t, "history after reopen", historyIDs(t, q, -1, -1), []string{"c", "x"})
	got, err := q.GetHistory(ctx(), "c")
	if err != nil {
		t.Fatal(err)
	}
	want.Prompt.Sensitive = nil
	sameEntry(t, got, want)
	// The counter survives: the next number follows the last one it gave.
	if n := push(t, q, "e", executor.PushOptions{}); n != 3 {
		t.Errorf("number after reopen = %v, want 3", n)
	}
	a := lease(t, q)
	if a.ID != "a" || a.Sensitive["api_key_comfy_org"] != "secret" || a.Attempts != 1 {
		t.Errorf("leased after reopen: %s attempts %d sensitive %v", a.ID, a.Attempts, a.Sensitive)
	}
	if a.Prompt["1"].Inputs["seed"] != json.Number("18446744073709551615") || a.ClientID() != "c1" || !reflect.DeepEqual(a.Outputs, []string{"1"}) {
		t.Errorf("job after reopen: %+v", a)
	}
}

// testExpiredLeaseKeepsSlot: a job running when its process stopped is pending again
// after a restart, in its old slot, with the attempt counted.
func testExpiredLeaseKeepsSlot(t *testing.T, o Opener) {
	q := open(t, o, Options{MaxAttempts: 3})
	push(t, q, "a", executor.PushOptions{})
	push(t, q, "b", executor.PushOptions{})
	lease(t, q)                                        // a runs when the process dies
	push(t, q, "c", executor.PushOptions{Front: true}) // -2: before a's slot
	push(t, q, "d", executor.PushOptions{})
	q.Close()

	q = open(t, o, Options{MaxAttempts: 3})
	equal(t, "running after restart", runningIDs(t, q), []string{})
	equal(t, "pending after restart", pendingIDs(t, q), []string{"c", "a", "b", "d"})
	equal(t, "remaining after restart", remaining(t, q), 4)
	lease(t, q) // c
	if j := lease(t, q); j.ID != "a" || j.Number != 0 || j.Attempts != 2 {
		t.Fatalf("leased %s number %v attempt %d, want a number 0 attempt 2", j.ID, j.Number, j.Attempts)
	}
	if _, err := q.GetHistory(ctx(), "a"); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("a requeued job has a history entry: %v", err)
	}
}

// testRetireAfterCrashLoop: a job whose lease expired MaxAttempts times leaves the
// queue with an error history entry; hand-backs do not count towards it.
func testRetireAfterCrashLoop(t *testing.T, o Opener) {
	opts := Options{MaxAttempts: 2}
	q := open(t, o, opts)
	push(t, q, "a", executor.PushOptions{})
	push(t, q, "b", executor.PushOptions{})
	j := lease(t, q)
	if err := q.Fail(ctx(), j.ID); err != nil { // a clean stop: not an attempt
		t.Fatal(err)
	}
	lease(t, q) // attempt 1 when the process dies
	q.Close()

	q = open(t, o, opts)
	equal(t, "pending after the first crash", pendingIDs(t, q), []string{"a", "b"})
	if j := lease(t, q); j.ID != "a" || j.Attempts != 2 {
		t.Fatalf("leased %s attempt %d, want a attempt 2", j.ID, j.Attempts)
	}
	q.Close()

	q = open(t, o, opts)
	equal(t, "pending after the second crash", pendingIDs(t, q), []string{"b"})
	equal(t, "running after the second crash", runningIDs(t, q), []string{})
	h, err := q.GetHistory(ctx(), "a")
	if err != nil {
		t.Fatalf("retired job: %v", err)
	}
	if h.Status.StatusStr != executor.StatusError || h.Status.Completed || len(h.Status.Messages) != 1 ||
		h.Status.Messages[0].Event != executor.EventExecutionError || h.Prompt.ID != "a" {
		t.Fatalf("retired job's status = %+v", h.Status)
	}
	d, _ := json.Marshal(h.Status.Messages[0].Data)
	var data struct {
		PromptID      string `json:"prompt_id"`
		ExceptionType string `json:"exception_type"`
	}
	if err := json.Unmarshal(d, &data); err != nil || data.PromptID != "a" || data.ExceptionType != executor.ExceptionProcessStopped {
		t.Fatalf("retired job's message = %s", d)
	}
	if b, _ := json.Marshal(h); bytes.Contains(b, []byte("secret")) {
		t.Errorf("retired job's history holds its sensitive data: %s", b)
	}
	// The id is free again.
	push(t, q, "a", executor.PushOptions{})
}

// testSensitiveData: Lease gives Sensitive back; List and the history never hold it.
func testSensitiveData(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	push(t, q, "b", executor.PushOptions{})
	j := lease(t, q)
	if j.Sensitive["api_key_comfy_org"] != "secret" {
		t.Fatalf("leased job lost its sensitive data: %v", j.Sensitive)
	}
	running, pending, err := q.List(ctx())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range append(running, pending...) {
		if l.Sensitive != nil {
			t.Errorf("List returned %s with its sensitive data", l.ID)
		}
		if l.ClientID() != "c1" || l.Prompt["1"] == nil {
			t.Errorf("List lost the job's data: %+v", l)
		}
	}
	if err := q.Ack(ctx(), j.ID, entry(j, executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	if err := q.PutHistory(ctx(), entry(job("p"), executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	hist, err := q.ListHistory(ctx(), -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hist {
		if h.Prompt.Sensitive != nil {
			t.Errorf("history entry %s holds sensitive data", h.Prompt.ID)
		}
	}
}

// testHistoryPaging: insertion order, replacement in place, ComfyUI's paging, the
// bound, delete and clear.
func testHistoryPaging(t *testing.T, o Opener) {
	q := open(t, o, Options{MaxHistory: 4})
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if err := q.PutHistory(ctx(), entry(job(id), executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	// a was dropped (MaxHistory 4); replacing c keeps its place.
	if err := q.PutHistory(ctx(), entry(job("c"), executor.StatusError)); err != nil {
		t.Fatal(err)
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
			equal(t, "entries", historyIDs(t, q, tc.maxItems, tc.offset), tc.want)
		})
	}
	if h, _ := q.GetHistory(ctx(), "c"); h == nil || h.Status.StatusStr != executor.StatusError {
		t.Errorf("replaced entry not updated: %+v", h)
	}
	if _, err := q.GetHistory(ctx(), "a"); !errors.Is(err, executor.ErrNotFound) {
		t.Errorf("dropped entry: %v, want ErrNotFound", err)
	}
	// Acks count towards the bound too.
	push(t, q, "f", executor.PushOptions{})
	f := lease(t, q)
	if err := q.Ack(ctx(), f.ID, entry(f, executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	equal(t, "after an ack", historyIDs(t, q, -1, -1), []string{"c", "d", "e", "f"})
	if err := q.DeleteHistory(ctx(), "d", "zz"); err != nil {
		t.Fatal(err)
	}
	equal(t, "last two after delete", historyIDs(t, q, 2, -1), []string{"e", "f"})
	equal(t, "after delete", historyIDs(t, q, -1, -1), []string{"c", "e", "f"})
	for _, id := range []string{"g", "h"} {
		if err := q.PutHistory(ctx(), entry(job(id), executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "bound after delete", historyIDs(t, q, -1, -1), []string{"e", "f", "g", "h"})
	if err := q.ClearHistory(ctx()); err != nil {
		t.Fatal(err)
	}
	equal(t, "after clear", historyIDs(t, q, 5, -1), []string{})
	if err := q.PutHistory(ctx(), entry(job("i"), executor.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	equal(t, "after clear and put", historyIDs(t, q, -1, -1), []string{"i"})
}

// testClosed: after Close every method fails with ErrClosed; closing again is fine.
func testClosed(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	push(t, q, "a", executor.PushOptions{})
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	calls := map[string]func() error{
		"Push":          func() error { _, err := q.Push(ctx(), job("b"), executor.PushOptions{}); return err },
		"Lease":         func() error { _, err := q.Lease(ctx()); return err },
		"Ack":           func() error { return q.Ack(ctx(), "a", entry(job("a"), executor.StatusSuccess)) },
		"Fail":          func() error { return q.Fail(ctx(), "a") },
		"Delete":        func() error { _, err := q.Delete(ctx(), "a"); return err },
		"Clear":         func() error { return q.Clear(ctx()) },
		"List":          func() error { _, _, err := q.List(ctx()); return err },
		"Remaining":     func() error { _, err := q.Remaining(ctx()); return err },
		"PutHistory":    func() error { return q.PutHistory(ctx(), entry(job("h"), executor.StatusSuccess)) },
		"GetHistory":    func() error { _, err := q.GetHistory(ctx(), "h"); return err },
		"ListHistory":   func() error { _, err := q.ListHistory(ctx(), -1, -1); return err },
		"DeleteHistory": func() error { return q.DeleteHistory(ctx(), "h") },
		"ClearHistory":  func() error { return q.ClearHistory(ctx()) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, executor.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// testConcurrentPushLease: concurrent pushes get distinct numbers and every job is
// leased exactly once.
func testConcurrentPushLease(t *testing.T, o Opener) {
	q := open(t, o, Options{})
	const n = 40
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := q.Push(ctx(), job("p"+strconv.Itoa(i)), executor.PushOptions{Front: i%3 == 0})
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
		j := lease(t, q)
		if seen[j.ID] {
			t.Fatalf("%s leased twice", j.ID)
		}
		seen[j.ID] = true
		if numbers[j.Number] {
			t.Fatalf("number %v given twice", j.Number)
		}
		numbers[j.Number] = true
		if err := q.Ack(ctx(), j.ID, entry(j, executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "remaining", remaining(t, q), 0)
	equal(t, "history size", len(historyIDs(t, q, -1, -1)), n)
}
