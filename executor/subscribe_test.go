package executor

import (
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
)

func TestSubscriptionDropsProgressFirstThenOverflows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHub(4)
		s := h.subscribe()
		defer s.Close()
		// Nobody reads: the pump takes the first event in hand and blocks on C; the rest
		// wait in the backlog.
		h.publish(Event{Type: EventExecutionStart})
		synctest.Wait()
		s.mu.Lock()
		inHand := len(s.backlog) == 0
		s.mu.Unlock()
		if !inHand {
			t.Fatal("the pump did not take the first event")
		}
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
	})
}

// TestSubscriptionDeliversInOrder: a reader that keeps up (the publisher waits for it
// every few hundred events, well within the backlog) gets every event in order.
func TestSubscriptionDeliversInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHub(0)
		s := h.subscribe()
		const n = 3000 // more than the backlog
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
				synctest.Wait() // the reader has drained the backlog
			}
		}
		got := <-done
		s.Close()
		if s.Overflowed() || s.Dropped() != 0 {
			t.Fatalf("overflowed %v, dropped %d for a reader that keeps up", s.Overflowed(), s.Dropped())
		}
		if len(got) != n {
			t.Fatalf("%d events delivered, want %d", len(got), n)
		}
		for i, v := range got {
			if v != i {
				t.Fatalf("event %d is %d: out of order", i, v)
			}
		}
		// Closing twice is fine, and publishing to a closed subscription does nothing.
		s.Close()
		h.publish(Event{Type: EventExecuted})
	})
}

// TestSubscriptionKeepsLatestProgressState: an undelivered progress_state is replaced
// by a newer one of the same prompt, so a slow subscriber holds one copy per prompt.
func TestSubscriptionKeepsLatestProgressState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHub(100)
		s := h.subscribe()
		defer s.Close()
		// Nobody reads: the pump holds the first event, the rest wait in the backlog.
		h.publish(Event{Type: EventExecutionStart})
		synctest.Wait()
		state := func(prompt string, n int) Event {
			return Event{Type: EventProgressState, Data: ProgressStateData{PromptID: prompt, Nodes: map[string]NodeProgress{"n": {Value: float64(n)}}}}
		}
		h.publish(state("a", 1))
		h.publish(state("b", 1))
		h.publish(Event{Type: EventExecuting})
		h.publish(state("a", 2))
		h.publish(state("a", 3))
		s.mu.Lock()
		var got []string
		for _, ev := range s.backlog {
			if d, ok := ev.Data.(ProgressStateData); ok {
				got = append(got, d.PromptID+":"+strconv.Itoa(int(d.Nodes["n"].Value)))
			} else {
				got = append(got, ev.Type)
			}
		}
		s.mu.Unlock()
		if want := []string{"b:1", EventExecuting, "a:3"}; !slices.Equal(got, want) {
			t.Errorf("backlog %v, want %v", got, want)
		}
		if s.Dropped() != 2 {
			t.Errorf("dropped %d, want 2", s.Dropped())
		}
	})
}

// TestSubscriptionKeepsLatestStatus: a broadcast status replaces the undelivered one.
func TestSubscriptionKeepsLatestStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHub(100)
		s := h.subscribe()
		defer s.Close()
		h.publish(Event{Type: EventExecutionStart})
		synctest.Wait()
		for i := range 50 {
			h.publish(Event{Type: EventStatus, Broadcast: true, Data: i})
		}
		s.mu.Lock()
		n, last := len(s.backlog), s.backlog[len(s.backlog)-1].Data
		s.mu.Unlock()
		if n != 1 || last != 49 {
			t.Errorf("backlog of %d, last %v; want the latest status only", n, last)
		}
	})
}
