package executor

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// run is the state of one prompt's execution.
type run struct {
	e        *Engine
	job      *Job
	clientID string
	p        *plan
	results  map[string]*cacheEntry    // node id → outputs, ran or from the cache
	sideUI   map[string]map[string]any // cached UI of prompt nodes outside the plan
	executed []string
	messages []Message
	progress *progressState
}

// execute runs job. With handBack set (the queue worker), a cancelled ctx means the
// worker is stopping: the prompt is abandoned and stopped is true so it can be handed
// back to the queue. Otherwise a cancelled ctx is an interrupt.
func (e *Engine) execute(parent context.Context, job *Job, handBack bool) (entry *HistoryEntry, stopped bool) {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	e.mu.Lock()
	e.running = &runningPrompt{id: job.ID, cancel: cancel}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running = nil
		e.mu.Unlock()
	}()

	r := &run{e: e, job: job, clientID: job.ClientID(), results: map[string]*cacheEntry{}, sideUI: map[string]map[string]any{}}
	r.progress = newProgressState(r, e.progressInterval)
	r.message(EventExecutionStart, ExecutionStartData{PromptID: job.ID, Timestamp: e.now().UnixMilli()})
	p, nerr := e.makePlan(job)
	if nerr != nil {
		return r.finishError(nerr), false
	}
	r.p = p
	ids := graph.SortedIDs(job.Prompt)
	e.signatures(job, ids, p, r.envFor)

	// Outputs found in the cache are taken now, so that RAM-pressure eviction during
	// the run cannot lose them. execution_cached lists every cached node of the
	// prompt, planned or not, as ComfyUI's does.
	cached := []string{}
	for _, id := range ids {
		if st := p.steps[id]; st != nil {
			if ent, ok := e.cache.get(st.sig); ok {
				r.results[id] = ent
				cached = append(cached, id)
			}
		} else if st := p.side[id]; st != nil {
			if ent, ok := e.cache.get(st.sig); ok {
				cached = append(cached, id)
				if ent.ui != nil {
					r.sideUI[id] = ent.ui
				}
			}
		}
	}
	r.message(EventExecutionCached, ExecutionCachedData{Nodes: cached, PromptID: job.ID, Timestamp: e.now().UnixMilli()})

	need := r.needed()
	for _, id := range p.order {
		if !need[id] {
			continue
		}
		st := p.steps[id]
		if ctx.Err() != nil {
			return r.cancelled(parent, st, handBack)
		}
		if ent, ok := r.results[id]; ok {
			// A cached node on the execution path (an output node): ComfyUI re-sends its
			// UI output to the prompt's client only.
			if ent.ui != nil {
				r.publish(Event{Type: EventExecuted, ClientID: r.clientID, Data: ExecutedData{Node: id, DisplayNode: id, Output: ent.ui, PromptID: job.ID}})
			}
			r.setProgress(id, NodeFinished, 1, 1)
			r.executed = append(r.executed, id)
			continue
		}
		if n := e.cache.relieve(); n > 0 {
			e.log.Info("evicted cached outputs under memory pressure", "entries", n)
		}
		node := id
		r.send(EventExecuting, ExecutingData{Node: &node, DisplayNode: &node, PromptID: job.ID})
		r.setProgress(id, NodeRunning, 0, 1)
		ent, nerr := r.runNode(ctx, st)
		if nerr != nil {
			if ctx.Err() != nil {
				return r.cancelled(parent, st, handBack)
			}
			r.setProgress(id, NodeError, 0, 1)
			return r.finishError(nerr), false
		}
		r.results[id] = ent
		e.cache.put(st.sig, ent)
		r.executed = append(r.executed, id)
		if ent.ui != nil {
			r.send(EventExecuted, ExecutedData{Node: id, DisplayNode: id, Output: ent.ui, PromptID: job.ID})
		}
		r.setProgress(id, NodeFinished, 1, 1)
	}
	r.progress.end()
	r.message(EventExecutionSuccess, ExecutionSuccessData{PromptID: job.ID, Timestamp: e.now().UnixMilli()})
	return r.finish(true), false
}

// cancelled ends a prompt whose context is done at node st: the worker stopping
// (parent done, handBack) abandons it for the queue to hand back; anything else is an
// interrupt.
func (r *run) cancelled(parent context.Context, st *step, handBack bool) (*HistoryEntry, bool) {
	if handBack && parent.Err() != nil {
		r.progress.end()
		r.endPrompt()
		return nil, true
	}
	return r.finishInterrupted(st), false
}

// needed returns the nodes to visit: walking back from the outputs, a node is needed
// when a needed node links from it, and the walk stops at nodes already cached.
func (r *run) needed() map[string]bool {
	need := map[string]bool{}
	var walk func(id string)
	walk = func(id string) {
		if need[id] {
			return
		}
		need[id] = true
		if _, cached := r.results[id]; cached {
			return
		}
		for _, l := range r.p.steps[id].links {
			walk(l.NodeID)
		}
	}
	for _, id := range r.p.outputs {
		walk(id)
	}
	return need
}

// envFor builds the environment of one node run.
func (r *run) envFor(st *step) *nodes.Env {
	e, id := r.e, st.id
	return &nodes.Env{
		Logger:   e.log.With("prompt_id", r.job.ID, "node", id, "class", st.class),
		PromptID: r.job.ID,
		NodeID:   id,
		Dirs:     e.dirs,
		Progress: func(value, max int) {
			r.publish(Event{Type: EventProgress, ClientID: r.clientID, Broadcast: r.clientID == "",
				Data: ProgressData{Value: value, Max: max, PromptID: r.job.ID, Node: id}})
			r.setProgress(id, NodeRunning, float64(value), float64(max))
		},
		Preview: func(p nodes.PreviewImage) {
			r.publish(Event{Type: EventPreview, ClientID: r.clientID, Broadcast: r.clientID == "",
				Preview: &PreviewFrame{Image: p, PromptID: r.job.ID, NodeID: id, DisplayNodeID: id, RealNodeID: id}})
		},
		Prompt:          r.job.Prompt,
		ExtraPNGInfo:    r.job.ExtraPNGInfo(),
		DisableMetadata: e.noMeta,
		MaxImagePixels:  e.maxImagePixels,
	}
}

// publish sends an event to subscribers.
func (r *run) publish(ev Event) { r.e.publish(ev) }

// send is ComfyUI's server.send_sync(event, data, client_id): to the prompt's client,
// or to everyone when the prompt has none.
func (r *run) send(typ string, data any) {
	r.publish(Event{Type: typ, ClientID: r.clientID, Broadcast: r.clientID == "", Data: data})
}

// message is ComfyUI's PromptExecutor.add_message: recorded in the history status and
// sent to the prompt's client only (never broadcast).
func (r *run) message(typ string, data any) {
	r.messages = append(r.messages, Message{Event: typ, Data: data})
	r.publish(Event{Type: typ, ClientID: r.clientID, Data: data})
}

// setProgress updates a node's progress_state entry; see progressState for when the
// state is sent.
func (r *run) setProgress(id, state string, value, max float64) {
	r.progress.set(id, state, value, max)
}

// endPrompt applies the cache policy, keeping the outputs of this prompt's nodes. A
// prompt that could not be planned leaves the cache alone: it has no nodes to keep,
// and a classic cache would otherwise lose everything to one bad prompt.
func (r *run) endPrompt() {
	if r.p == nil {
		return
	}
	keep := map[string]bool{}
	for id := range r.results {
		keep[r.p.steps[id].sig] = true
	}
	for _, st := range r.p.side {
		keep[st.sig] = true
	}
	r.e.cache.endPrompt(keep)
}

// finish applies the cache policy and builds the history entry.
func (r *run) finish(success bool) *HistoryEntry {
	r.endPrompt()
	entry := &HistoryEntry{
		Prompt:  *r.job,
		Outputs: map[string]map[string]any{},
		Status:  Status{StatusStr: StatusError, Completed: success, Messages: r.messages},
		Meta:    map[string]NodeMeta{},
	}
	entry.Prompt.Sensitive = nil
	if success {
		entry.Status.StatusStr = StatusSuccess
	}
	// As ComfyUI's history_result: the UI of every node of the prompt that has one,
	// run or cached, planned or not (a partial run still lists the other outputs).
	for id, ent := range r.results {
		if ent.ui != nil {
			entry.Outputs[id] = ent.ui
		}
	}
	maps.Copy(entry.Outputs, r.sideUI)
	for id := range entry.Outputs {
		entry.Meta[id] = NodeMeta{NodeID: id, DisplayNode: id, RealNodeID: id}
	}
	return entry
}

// publishDone sends the final "executing" with node null. ComfyUI's prompt_worker sends
// it after the history is written (clients fetch /history when they see it), and only
// to the prompt's client; without one, only in-process subscribers see it.
func (e *Engine) publishDone(job *Job) {
	e.publish(Event{Type: EventExecuting, ClientID: job.ClientID(), Data: ExecutingData{PromptID: job.ID}})
}

func (r *run) executedList() []string {
	return append([]string{}, r.executed...)
}

func (r *run) currentOutputs() []string {
	ids := make([]string, 0, len(r.results))
	for id := range r.results {
		ids = append(ids, id)
	}
	graph.SortIDs(ids)
	return ids
}

func (r *run) finishInterrupted(st *step) *HistoryEntry {
	r.setProgress(st.id, NodeError, 0, 1)
	r.progress.end()
	r.message(EventExecutionInterrupted, ExecutionInterruptedData{
		PromptID: r.job.ID, NodeID: st.id, NodeType: st.class,
		Executed: r.executedList(), Timestamp: r.e.now().UnixMilli(),
	})
	return r.finish(false)
}

func (r *run) finishError(nerr *nodeError) *HistoryEntry {
	r.e.log.Warn("node failed", "prompt_id", r.job.ID, "node", nerr.nodeID, "class", nerr.class, "err", nerr.err)
	typ := "error"
	trace := []string{nerr.err.Error()}
	if nerr.panicked {
		typ = "panic"
		trace = nerr.stack
	} else if t := exceptionType(nerr.err); t != "" {
		typ = t
	}
	inputs := nerr.inputs
	if inputs == nil {
		inputs = map[string][]any{}
	}
	r.progress.end()
	r.message(EventExecutionError, ExecutionErrorData{
		PromptID: r.job.ID, NodeID: nerr.nodeID, NodeType: nerr.class,
		Executed:         r.executedList(),
		ExceptionMessage: nerr.err.Error(),
		ExceptionType:    typ,
		Traceback:        trace,
		CurrentInputs:    inputs,
		CurrentOutputs:   r.currentOutputs(),
		Timestamp:        r.e.now().UnixMilli(),
	})
	return r.finish(false)
}

// exceptionType names an error's kind for execution_error: the error's own
// ExceptionType() when it has one, else its Go type unless that is a plain wrapper.
func exceptionType(err error) string {
	var named interface{ ExceptionType() string }
	if errors.As(err, &named) {
		return named.ExceptionType()
	}
	switch t := fmt.Sprintf("%T", err); t {
	case "*errors.errorString", "*fmt.wrapError", "*fmt.wrapErrors", "*errors.joinError":
		return ""
	default:
		return t
	}
}
