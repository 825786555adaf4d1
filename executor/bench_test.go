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

// BenchmarkLongChain runs a 10,000-node chain of trivial nodes with a subscriber reading
// every event, as the server's forwarder does: the engine's cost per node when the
// prompt is large (progress_state is sent at most once per interval, so its cost no
// longer grows with the square of the chain).
func BenchmarkLongChain(b *testing.B) {
	fx := newFixture(b)
	e, err := executor.New(executor.Options{Registry: fx.reg, Cache: executor.CacheOptions{Mode: executor.CacheNone}})
	if err != nil {
		b.Fatal(err)
	}
	sub := e.Subscribe()
	defer sub.Close()
	go func() {
		for range sub.C {
		}
	}()
	job := &executor.Job{ID: "bench", Prompt: longChain(10000, 1)}
	for b.Loop() {
		if h := e.Execute(context.Background(), job); h.Status.StatusStr != executor.StatusSuccess {
			b.Fatal(h.Status)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10002, "ns/node")
}
