package batch

import (
	"bytes"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

func TestProgressTerminalAndPlain(t *testing.T) {
	prompt := graph.Prompt{
		"1": {ClassType: "EmptyImage"},
		"2": {ClassType: "KSampler"},
		"3": {ClassType: "SaveImage"},
	}
	node := func(s string) *string { return &s }
	events := []executor.Event{
		{Type: executor.EventExecutionCached, Data: executor.ExecutionCachedData{PromptID: "p", Nodes: []string{"1"}}},
		{Type: executor.EventExecuting, Data: executor.ExecutingData{PromptID: "p", Node: node("2")}},
		{Type: executor.EventProgress, Data: executor.ProgressData{PromptID: "p", Node: "2", Value: 5, Max: 20}},
		{Type: executor.EventExecuting, Data: executor.ExecutingData{PromptID: "other", Node: node("9")}}, // another prompt
		{Type: executor.EventExecuting, Data: executor.ExecutingData{PromptID: "p", Node: node("3")}},
		{Type: executor.EventExecutionSuccess, Data: executor.ExecutionSuccessData{PromptID: "p"}},
	}
	for _, tty := range []bool{true, false} {
		var buf bytes.Buffer
		p := newProgress(&buf, tty, 2)
		p.start(1, "wf.json", prompt)
		more := true
		var snapshots []string
		for _, ev := range events {
			more = p.event("p", ev)
			snapshots = append(snapshots, buf.String())
		}
		if more {
			t.Errorf("tty=%v: the success event did not end the watch", tty)
		}
		out := buf.String()
		if tty {
			// After the progress event the line shows the sampler's step bar.
			if !strings.Contains(snapshots[2], "KSampler #2") || !strings.Contains(snapshots[2], "5/20") || !strings.Contains(snapshots[2], "2/3 nodes") {
				t.Errorf("terminal line after progress: %q", snapshots[2])
			}
			if !strings.Contains(out, "\r\033[K") || strings.Contains(out, "#9") {
				t.Errorf("terminal output %q", out)
			}
			continue
		}
		want := "[2/2] wf.json: 3 nodes\n  2/3 KSampler #2\n  3/3 SaveImage #3\n"
		if out != want {
			t.Errorf("plain output\n%q\nwant\n%q", out, want)
		}
	}
}
