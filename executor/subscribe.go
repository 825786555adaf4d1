package executor

import (
	"sync"
)

// DefaultSubscriberBacklog is the number of undelivered events a subscriber may hold
// before the hub starts dropping its progress and preview events: enough for the
// events of a 10,000-node prompt of trivial nodes, which a loaded machine may produce
// faster than a subscriber is scheduled.
const DefaultSubscriberBacklog = 16384

// Subscription receives the engine's events in order on C.
//
// The engine never blocks on a subscriber. Each subscription has its own backlog
// (Options.SubscriberBacklog events) drained by a goroutine into C. When the backlog is
// full the hub first drops the oldest droppable events (progress, progress_state and
// preview frames: a later one supersedes them; a progress_state or a broadcast status
// is also dropped as soon as a newer one of its kind arrives); if the backlog is still full of events
// that must not be lost, the subscriber is hopelessly behind: the hub closes C and
// Overflowed reports true, so the server can drop that websocket rather than feed it a
// history with holes.
type Subscription struct {
	// C delivers events. It is closed by Close or on overflow.
	C <-chan Event

	hub     *hub
	out     chan Event
	mu      sync.Mutex
	backlog []Event
	limit   int
	wake    chan struct{}
	done    chan struct{}
	closed  bool
	over    bool
	dropped int
}

// Close stops the subscription and closes C. It is safe to call more than once.
func (s *Subscription) Close() {
	s.hub.remove(s)
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
}

// Overflowed reports whether the hub closed C because the subscriber fell too far behind.
func (s *Subscription) Overflowed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.over
}

// Dropped returns how many droppable events were discarded for this subscriber.
func (s *Subscription) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func droppable(typ string) bool {
	return typ == EventProgress || typ == EventProgressState || typ == EventPreview
}

// offer queues e without blocking.
func (s *Subscription) offer(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if e.Type == EventProgressState || (e.Type == EventStatus && e.Broadcast) {
		s.dropSuperseded(e)
	}
	s.backlog = append(s.backlog, e)
	if len(s.backlog) > s.limit {
		kept := s.backlog[:0]
		excess := len(s.backlog) - s.limit
		for _, old := range s.backlog {
			if excess > 0 && droppable(old.Type) {
				excess--
				s.dropped++
				continue
			}
			kept = append(kept, old)
		}
		clear(s.backlog[len(kept):])
		s.backlog = kept
		if len(s.backlog) > s.limit {
			s.over = true
			s.closed = true
			close(s.done)
			return
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dropSuperseded removes from the backlog the undelivered event that e supersedes: the
// progress_state of e's prompt (each carries the whole state), or the broadcast queue
// status before e. A slow subscriber then holds one copy of each, not a backlog of
// them (a thousand prompts queued at once broadcast a thousand statuses).
func (s *Subscription) dropSuperseded(e Event) {
	id := progressPrompt(e)
	for i := len(s.backlog) - 1; i >= 0; i-- {
		if old := s.backlog[i]; old.Type == e.Type && old.Broadcast == e.Broadcast && progressPrompt(old) == id {
			copy(s.backlog[i:], s.backlog[i+1:])
			s.backlog[len(s.backlog)-1] = Event{}
			s.backlog = s.backlog[:len(s.backlog)-1]
			s.dropped++
			return
		}
	}
}

func progressPrompt(e Event) string {
	d, _ := e.Data.(ProgressStateData)
	return d.PromptID
}

// pump moves the backlog into out until the subscription closes.
func (s *Subscription) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.hub.remove(s)
			return
		}
		if len(s.backlog) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-s.done:
			}
			continue
		}
		e := s.backlog[0]
		s.backlog[0] = Event{}
		s.backlog = s.backlog[1:]
		s.mu.Unlock()
		select {
		case s.out <- e:
		case <-s.done:
		}
	}
}

// hub fans events out to subscribers.
type hub struct {
	mu    sync.Mutex
	subs  map[*Subscription]struct{}
	limit int
}

func newHub(limit int) *hub {
	if limit <= 0 {
		limit = DefaultSubscriberBacklog
	}
	return &hub{subs: map[*Subscription]struct{}{}, limit: limit}
}

func (h *hub) subscribe() *Subscription {
	out := make(chan Event)
	s := &Subscription{
		C:     out,
		hub:   h,
		out:   out,
		limit: h.limit,
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	go s.pump()
	return s
}

func (h *hub) remove(s *Subscription) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// active reports whether anyone is subscribed.
func (h *hub) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *hub) publish(e Event) {
	h.mu.Lock()
	subs := make([]*Subscription, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.offer(e)
	}
}
