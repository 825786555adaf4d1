package executor_test

import (
	"context"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// FuzzExecutePrompt runs arbitrary prompts on the fake nodes (without Blocker, which
// would wait forever): whatever the prompt, Execute returns a history entry with a
// status and never panics.
func FuzzExecutePrompt(f *testing.F) {
	for _, seed := range []string{
		`{"1":{"class_type":"Const","inputs":{"value":1}},"2":{"class_type":"Sink","inputs":{"value":["1",0]}}}`,
		`{"1":{"class_type":"Range","inputs":{"n":3}},"2":{"class_type":"Add","inputs":{"a":["1",0],"b":["1",0]}},"3":{"class_type":"Sum","inputs":{"values":["2",0]}}}`,
		`{"1":{"class_type":"Add","inputs":{"a":["1",0],"b":1}},"2":{"class_type":"Sink","inputs":{"value":["1",0]}}}`,
		`{"1":{"class_type":"Sink","inputs":{"value":["1",7]}}}`,
		`{"1":{"class_type":"Panic","inputs":{"value":["2",0]}},"2":{"class_type":"Const","inputs":{"value":"x"}}}`,
		`{"1":{"class_type":"Range","inputs":{"n":0}},"2":{"class_type":"Sink","inputs":{"value":["1",0]}}}`,
		`{"1":{"class_type":"File","inputs":{"path":5}},"2":{"class_type":"Sum","inputs":{"values":["1",0]}}}`,
	} {
		f.Add([]byte(seed))
	}
	fx := newFixture(f)
	e, err := executor.New(executor.Options{Registry: fx.reg})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := graph.ParsePrompt(data)
		if err != nil {
			return
		}
		for _, n := range p {
			if n != nil && n.ClassType == "Blocker" {
				return
			}
		}
		done := make(chan *executor.HistoryEntry, 1)
		go func() { done <- e.Execute(context.Background(), &executor.Job{ID: "f", Prompt: p}) }()
		var h *executor.HistoryEntry
		select {
		case h = <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("prompt still running after 30s: %s", data)
		}
		if h == nil || (h.Status.StatusStr != executor.StatusSuccess && h.Status.StatusStr != executor.StatusError) {
			t.Fatalf("entry %+v", h)
		}
	})
}
