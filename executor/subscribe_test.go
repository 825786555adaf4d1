package executor

import (
	"testing"
	"time"
)

func TestSubscriptionDropsProgressFirstThenOverflows(t *testing.T) {
	h := newHub(4)
	s := h.subscribe()
	defer s.Close()
	// Nobody reads: the pump holds at most one event in hand, the rest wait in the backlog.
	h.publish(Event{Type: EventExecutionStart})
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.backlog) == 0 })
	for range 3 {
		h.publish(Event{Type: EventProgress})
	}
	h.publish(Event{Type: EventExecuting})
	h.publish(Event{Type: EventExecuted}) // over the limit: the oldest progress goes
	if s.Dropped() != 1 || s.Overflowed() {
		t.Fatalf("dropped %d overflowed %v; want 1 progress dropped", s.Dropped(), s.Overflowed())
	}
	h.publish(Event{Type: EventExecuted})
	h.publish(Event{Type: EventExecuted})
	if s.Dropped() != 3 || s.Overflowed() {
		t.Fatalf("dropped %d overflowed %v; want every progress dropped", s.Dropped(), s.Overflowed())
	}
	h.publish(Event{Type: EventExecutionSuccess}) // nothing droppable left
	if !s.Overflowed() {
		t.Fatal("no overflow with a backlog full of events that must not be lost")
	}
	// C delivers what was in hand, then closes.
	var got []string
	for ev := range s.C {
		got = append(got, ev.Type)
	}
	if len(got) > 1 || (len(got) == 1 && got[0] != EventExecutionStart) {
		t.Errorf("after overflow got %v", got)
	}
}

func TestSubscriptionDeliversInOrder(t *testing.T) {
	h := newHub(0)
	s := h.subscribe()
	const n = 3000 // more than the backlog: the reader keeps up, nothing is dropped
	done := make(chan []int)
	go func() {
		var got []int
		for ev := range s.C {
			got = append(got, ev.Data.(int))
			if len(got) == n {
				break
			}
		}
		done <- got
	}()
	for i := range n {
		h.publish(Event{Type: EventExecuted, Data: i})
		if i%500 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	got := <-done
	s.Close()
	if s.Overflowed() {
		// A reader that fell behind on a loaded machine loses the tail (the subscription
		// closes), but what it did get must still be in publishing order.
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("event %d is %d after %d: out of order", i, got[i], got[i-1])
			}
		}
	} else {
		if len(got) != n {
			t.Fatalf("%d events delivered, want %d", len(got), n)
		}
		for i, v := range got {
			if v != i {
				t.Fatalf("event %d is %d: out of order", i, v)
			}
		}
	}
	// Closing twice is fine, and publishing to a closed subscription does nothing.
	s.Close()
	h.publish(Event{Type: EventExecuted})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
