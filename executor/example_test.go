package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/store"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// double is a tiny output node: it shows twice its INT widget.
type double struct{}

func (double) Schema() *graph.Schema {
	return &graph.Schema{Name: "Double", OutputNode: true,
		Inputs: []graph.Input{{Name: "value", Type: graph.TypeInt, Default: 1}}}
}

func (double) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	v, err := in.Int("value")
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{Outputs: []any{}, UI: map[string]any{"text": []any{2 * v}}}, nil
}

// Queue a prompt on a durable queue, follow its events, and read its history.
func Example() {
	dir, _ := os.MkdirTemp("", "executor-example")
	defer os.RemoveAll(dir)

	reg := nodes.NewRegistry()
	if err := reg.Register(double{}); err != nil {
		log.Fatal(err)
	}
	queue, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer queue.Close()
	engine, err := executor.New(executor.Options{Registry: reg, Queue: queue})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go engine.Run(ctx)

	sub := engine.Subscribe()
	defer sub.Close()
	prompt := graph.Prompt{"1": {ClassType: "Double", Inputs: map[string]any{"value": json.Number("21")}}}
	job := &executor.Job{ID: "example", Prompt: prompt, ExtraData: map[string]any{"client_id": "me"}}
	if _, err := engine.Submit(ctx, job, executor.PushOptions{}); err != nil {
		log.Fatal(err)
	}
	for ev := range sub.C {
		if ev.ClientID != "me" || ev.Type == executor.EventProgressState {
			// Status broadcasts; progress_state is sent at most every
			// ProgressInterval and a newer one replaces one not yet read, so how
			// many arrive depends on timing.
			continue
		}
		fmt.Println(ev.Type)
		if d, ok := ev.Data.(executor.ExecutingData); ok && d.Node == nil {
			break
		}
	}
	// The history is written before the final "executing" (node null) is sent.
	entry, err := queue.GetHistory(ctx, "example")
	if err != nil {
		log.Fatal(err)
	}
	out, _ := json.Marshal(entry.Outputs)
	fmt.Println(entry.Status.StatusStr, string(out))
	// Output:
	// execution_start
	// execution_cached
	// executing
	// executed
	// execution_success
	// executing
	// success {"1":{"text":[42]}}
}
