package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/queuetest"
)

// startNode starts a single embedded JetStream node for a test.
func startNode(t testing.TB) *Node {
	t.Helper()
	n, err := StartNode(NodeOptions{StoreDir: t.TempDir(), Host: "127.0.0.1", Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

var prefixes atomic.Int64

// TestQueueConformance runs the executor.Queue suite on JetStream: each subtest gets
// its own streams (a fresh prefix) on one embedded node, and every open of one
// subtest is the same process name on the same streams, as a restarted worker.
func TestQueueConformance(t *testing.T) {
	n := startNode(t)
	queuetest.Run(t, func(t *testing.T) queuetest.Opener {
		prefix := fmt.Sprintf("t%d", prefixes.Add(1))
		return func(t *testing.T, o queuetest.Options) executor.Queue {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			q, err := Open(ctx, n.ClientURL(), Options{Name: "worker-1", Prefix: prefix, MaxAttempts: o.MaxAttempts, MaxHistory: o.MaxHistory, LeaseTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return q
		}
	})
}

// TestStatusReachesEveryFront: a push or deletion through one front changes the queue
// for the clients of every front, so the others hear the new queue_remaining; the
// front that made the change does not hear its own status back (its engine told its
// clients already).
func TestStatusReachesEveryFront(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(name string) (*Queue, chan int) {
		q, err := Open(ctx, n.ClientURL(), Options{Name: name, Prefix: "st"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		ch := make(chan int, 16)
		if err := q.Events(ctx, func(ev executor.Event) {
			if d, ok := ev.Data.(executor.StatusData); ok && ev.Type == executor.EventStatus {
				ch <- d.Status.ExecInfo.QueueRemaining
			}
		}); err != nil {
			t.Fatal(err)
		}
		return q, ch
	}
	a, heardA := open("front-a")
	b, heardB := open("front-b")
	expect := func(ch chan int, want int) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("queue_remaining %d, want %d", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no status event (want queue_remaining %d)", want)
		}
	}
	for _, id := range []string{"p1", "p2"} {
		if _, err := b.Push(ctx, &executor.Job{ID: id}, executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	expect(heardA, 1)
	expect(heardA, 2)
	if n, err := b.Delete(ctx, "p1"); err != nil || n != 1 {
		t.Fatalf("delete: %d %v", n, err)
	}
	expect(heardA, 1)
	if err := a.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	expect(heardB, 0)
	select {
	case got := <-heardB:
		t.Fatalf("front b heard a status it did not expect (%d): its own?", got)
	case got := <-heardA:
		t.Fatalf("front a heard its own status (%d)", got)
	case <-time.After(300 * time.Millisecond):
	}
}
