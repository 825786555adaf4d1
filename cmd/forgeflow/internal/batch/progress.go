package batch

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// progress draws a run's progress: on a terminal one line per workflow, rewritten in
// place with a bar of its nodes and a bar of the running node's steps; elsewhere plain
// lines, one per node, so that logs and CI output stay readable.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	total int

	idx              int
	path             string
	classes          map[string]string
	nodes, nodesDone int
	node             string
	step, steps      int
}

func newProgress(w io.Writer, tty bool, total int) *progress {
	return &progress{w: w, tty: tty, total: total}
}

const barWidth = 20

func drawBar(done, total int) string {
	if total <= 0 {
		return strings.Repeat("░", barWidth)
	}
	n := min(barWidth, done*barWidth/total)
	return strings.Repeat("█", n) + strings.Repeat("░", barWidth-n)
}

// line prints a finished line.
func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintln(p.w, s)
}

func (p *progress) start(idx int, path string, prompt graph.Prompt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.classes = map[string]string{}
	for id, n := range prompt {
		p.classes[id] = n.ClassType
	}
	nodes := len(prompt)
	p.idx, p.path, p.nodes, p.nodesDone, p.node, p.step, p.steps = idx, path, nodes, 0, "", 0, 0
	if p.tty {
		p.redraw()
		return
	}
	fmt.Fprintf(p.w, "[%d/%d] %s: %d nodes\n", idx+1, p.total, path, nodes)
}

func (p *progress) redraw() {
	s := fmt.Sprintf("[%d/%d] %s %s %d/%d nodes", p.idx+1, p.total, p.path, drawBar(p.nodesDone, p.nodes), p.nodesDone, p.nodes)
	if p.node != "" {
		s += " · " + p.node
		if p.steps > 0 {
			s += fmt.Sprintf(" %s %d/%d", drawBar(p.step, p.steps), p.step, p.steps)
		}
	}
	fmt.Fprint(p.w, "\r\033[K"+s)
}

// event updates the display from one engine event of prompt id; it reports false once
// the prompt's final event was seen.
func (p *progress) event(id string, ev executor.Event) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	more := true
	switch d := ev.Data.(type) {
	case executor.ExecutionCachedData:
		if d.PromptID != id {
			return true
		}
		p.nodesDone += len(d.Nodes)
	case *executor.ExecutionCachedData:
		if d.PromptID != id {
			return true
		}
		p.nodesDone += len(d.Nodes)
	case executor.ExecutingData:
		if d.PromptID != id || d.Node == nil {
			return true
		}
		p.executing(*d.Node)
	case *executor.ExecutingData:
		if d.PromptID != id || d.Node == nil {
			return true
		}
		p.executing(*d.Node)
	case executor.ProgressData:
		if d.PromptID != id {
			return true
		}
		p.step, p.steps = d.Value, d.Max
	case *executor.ProgressData:
		if d.PromptID != id {
			return true
		}
		p.step, p.steps = d.Value, d.Max
	default:
		switch ev.Type {
		case executor.EventExecutionSuccess, executor.EventExecutionError, executor.EventExecutionInterrupted:
			if promptIDOf(ev.Data) == id {
				more = false
			}
		}
	}
	if p.tty {
		p.redraw()
	}
	return more
}

func (p *progress) executing(node string) {
	p.nodesDone++
	p.node, p.step, p.steps = fmt.Sprintf("%s #%s", p.classes[node], node), 0, 0
	if !p.tty {
		fmt.Fprintf(p.w, "  %d/%d %s\n", p.nodesDone, p.nodes, p.node)
	}
}

// promptIDOf reads the prompt_id of a final event's data.
func promptIDOf(data any) string {
	switch d := data.(type) {
	case executor.ExecutionSuccessData:
		return d.PromptID
	case *executor.ExecutionSuccessData:
		return d.PromptID
	case executor.ExecutionErrorData:
		return d.PromptID
	case *executor.ExecutionErrorData:
		return d.PromptID
	case executor.ExecutionInterruptedData:
		return d.PromptID
	case *executor.ExecutionInterruptedData:
		return d.PromptID
	}
	return ""
}

func (p *progress) done(r runResult) {
	s := fmt.Sprintf("[%d/%d] %s: %s in %s", p.idx+1, p.total, r.path, r.status, r.elapsed.Round(1e6))
	if r.detail != "" {
		s += ": " + r.detail
	}
	p.line(s)
}

func (p *progress) finish() {}
