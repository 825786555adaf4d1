package executor_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// longChain is Const → Add × n → Sink.
func longChain(n, b int) graph.Prompt {
	p := graph.Prompt{"0": node("Const", map[string]any{"value": json.Number("1")})}
	for i := 1; i <= n; i++ {
		p[strconv.Itoa(i)] = node("Add", map[string]any{"a": graph.NewLink(strconv.Itoa(i-1), 0), "b": json.Number(strconv.Itoa(b))})
	}
	p["sink"] = node("Sink", map[string]any{"value": graph.NewLink(strconv.Itoa(n), 0)})
	return p
}

// BenchmarkExecute measures the engine's own overhead per prompt (plan, signatures,
// events, cache) on a 100-node chain of trivial nodes: every node run (cache none),
// and every node cached.
func BenchmarkExecute(b *testing.B) {
	for _, tc := range []struct {
		name string
		mode executor.CacheMode
	}{{"run/100nodes", executor.CacheNone}, {"cached/100nodes", executor.CacheClassic}} {
		b.Run(tc.name, func(b *testing.B) {
			fx := newFixture(b)
			e, err := executor.New(executor.Options{Registry: fx.reg, Cache: executor.CacheOptions{Mode: tc.mode}})
			if err != nil {
				b.Fatal(err)
			}
			p := longChain(100, 1)
			job := &executor.Job{ID: "bench", Prompt: p}
			e.Execute(context.Background(), job)
			b.ResetTimer()
			for b.Loop() {
				if h := e.Execute(context.Background(), job); h.Status.StatusStr != executor.StatusSuccess {
					b.Fatal(h.Status)
				}
			}
		})
	}
}
