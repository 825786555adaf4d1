package executor

import (
	"maps"
	"sync"
	"time"
)

// DefaultProgressInterval is how often, at most, a prompt's progress_state is sent
// while it holds up to progressEntriesPerInterval nodes; a bigger state waits
// proportionally longer, so that a prompt sends at most about
// progressEntriesPerInterval node entries per interval, whatever its size.
const DefaultProgressInterval = 100 * time.Millisecond

const progressEntriesPerInterval = 1000

// progressState is one prompt's progress_state: the state of every node that has
// started, kept incrementally (one map entry per node).
//
// ComfyUI sends the whole map on every node update, and its clients replace their copy
// with each message; that costs O(nodes) per update, O(nodes²) per prompt (a
// 10,000-node chain took 14 s and 3 GB). Here the whole map still goes out, so clients
// see what ComfyUI's see, but at most once per interval (longer for a state of more
// than progressEntriesPerInterval nodes): an update within the interval only marks
// the state dirty and a timer sends the latest state when the interval ends. What a
// prompt sends is then bounded by its run time, not by its size squared. end sends what is pending before the prompt's last messages, so the final
// state always arrives before execution_success, execution_error or
// execution_interrupted.
type progressState struct {
	r        *run
	interval time.Duration

	mu     sync.Mutex
	nodes  map[string]NodeProgress
	dirty  bool
	last   time.Time // when the state was last sent
	timer  *time.Timer
	closed bool
}

func newProgressState(r *run, interval time.Duration) *progressState {
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	return &progressState{r: r, interval: interval, nodes: map[string]NodeProgress{}}
}

// set records a node's state and sends the state now, or when the interval since the
// last send has passed.
func (ps *progressState) set(id, state string, value, max float64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.nodes[id] = NodeProgress{Value: value, Max: max, State: state, NodeID: id, PromptID: ps.r.job.ID, DisplayNodeID: id, RealNodeID: id}
	if ps.closed {
		return
	}
	ps.dirty = true
	wait := ps.interval*time.Duration(1+len(ps.nodes)/progressEntriesPerInterval) - time.Since(ps.last)
	if wait <= 0 {
		ps.sendLocked()
		return
	}
	if ps.timer == nil {
		ps.timer = time.AfterFunc(wait, ps.tick)
	}
}

func (ps *progressState) tick() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.timer = nil
	if !ps.closed {
		ps.sendLocked()
	}
}

// sendLocked publishes a copy of the state if it changed since the last send. The copy
// is skipped when nobody listens.
func (ps *progressState) sendLocked() {
	if !ps.dirty {
		return
	}
	ps.dirty = false
	ps.last = time.Now()
	if !ps.r.e.hub.active() {
		return
	}
	ps.r.send(EventProgressState, ProgressStateData{PromptID: ps.r.job.ID, Nodes: maps.Clone(ps.nodes)})
}

// end sends the pending state, if any, and stops sending: later updates are recorded
// but not sent. It is safe to call more than once.
func (ps *progressState) end() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return
	}
	if ps.timer != nil {
		ps.timer.Stop()
		ps.timer = nil
	}
	ps.sendLocked()
	ps.closed = true
}
