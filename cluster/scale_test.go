package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
)

// startWorker runs an in-process worker (its own connection) until the test ends
// or stop is called.
func startWorker(t testing.TB, urls, prefix, name string, lease time.Duration, models []string) (stop func()) {
	t.Helper()
	o := testWorkerOptions(name, prefix, filepath.Join(t.TempDir(), name), lease)
	if models != nil {
		o.Models = func() []string { return models }
	}
	return startWorkerWith(t, urls, o)
}

func startWorkerWith(t testing.TB, urls string, o WorkerOptions) (stop func()) {
	t.Helper()
	name := o.Queue.Name
	nc, err := Connect(urls, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := NewWorker(ctx, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker %s: %v", name, err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
			nc.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestInterruptDeleteRouting: through the other front, an interrupt stops a prompt a
// worker runs and a delete removes a queued prompt; a prompt naming a model no worker
// has waits, with the worker's refusal visible in /queue.
func TestInterruptDeleteRouting(t *testing.T) {
	// POST /prompt takes canonical UUIDs as prompt ids.
	const (
		idLong   = "00000000-0000-4000-8000-00000000001a"
		idQueued = "00000000-0000-4000-8000-00000000001b"
		idNeeds  = "00000000-0000-4000-8000-00000000001c"
		idHas    = "00000000-0000-4000-8000-00000000001d"
	)
	n := startNode(t)
	a := startFront(t, n.ClientURL(), "irq", "front-a")
	b := startFront(t, n.ClientURL(), "irq", "front-b")
	startWorker(t, n.ClientURL(), "irq", "w1", 2*time.Second, []string{"have.safetensors"})
	waitFor(t, 30*time.Second, "the worker's advert", func() bool { return len(a.q.peers.live()) == 1 })

	submit := func(f *front, id string, prompt map[string]any) {
		t.Helper()
		if code, body := postJSON(t, f, "/prompt", map[string]any{"prompt": prompt, "prompt_id": id}); code != http.StatusOK {
			t.Fatalf("POST /prompt %s: %d %s", id, code, body)
		}
	}
	submit(a, idLong, workPrompt(60000, "long"))
	waitFor(t, 30*time.Second, "the long prompt to run", func() bool { return len(runningOn(a.q)["w1"]) == 1 })
	submit(a, idQueued, workPrompt(10, "queued"))
	submit(a, idNeeds, workPrompt(10, "needs/missing.safetensors"))
	submit(a, idHas, workPrompt(10, "have.safetensors"))

	var queue struct {
		Running [][]json.RawMessage `json:"queue_running"`
		Pending [][]json.RawMessage `json:"queue_pending"`
	}
	getJSON(t, b, "/queue", &queue)
	if len(queue.Running) != 1 || len(queue.Pending) != 3 {
		t.Fatalf("/queue on front b: %d running, %d pending; want 1 and 3", len(queue.Running), len(queue.Pending))
	}
	var routing struct {
		Routing struct {
			RefusedBy map[string]string `json:"refused_by"`
			Waiting   string            `json:"waiting"`
		} `json:"forgeflow_routing"`
	}
	if err := json.Unmarshal(queue.Pending[1][3], &routing); err != nil {
		t.Fatal(err)
	}
	if routing.Routing.RefusedBy["w1"] != "missing needs/missing.safetensors" || routing.Routing.Waiting == "" {
		t.Errorf("extra_data of a prompt no worker can run: %s", queue.Pending[1][3])
	}

	if code, body := postJSON(t, b, "/queue", map[string]any{"delete": []string{idQueued}}); code != http.StatusOK {
		t.Fatalf("POST /queue delete: %d %s", code, body)
	}
	if code, body := postJSON(t, b, "/interrupt", map[string]any{"prompt_id": idLong}); code != http.StatusOK {
		t.Fatalf("POST /interrupt: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the interrupted prompt in the history and the next one done", func() bool {
		h := history(t, a)
		return h[idLong].Status.StatusStr == executor.StatusError && h[idHas].Status.StatusStr == executor.StatusSuccess
	})
	h := history(t, a)
	if _, ok := h[idQueued]; ok {
		t.Error("a deleted prompt ran")
	}
	interrupted := false
	for _, m := range h[idLong].Status.Messages {
		interrupted = interrupted || bytes.HasPrefix(m, []byte(`["execution_interrupted",`))
	}
	if !interrupted {
		t.Errorf("the long prompt's history: %s", h[idLong].Status.Messages)
	}
	if n, _ := a.q.Remaining(context.Background()); n != 1 {
		t.Errorf("remaining %d, want 1 (the prompt no worker can run)", n)
	}
}

// throughput runs n pre-queued prompts of workMS on k in-process workers over the
// cluster at urls and returns the wall time from the workers' start to the last
// prompt in the history.
func throughput(t testing.TB, urls, prefix string, k, n, workMS int) time.Duration {
	t.Helper()
	ctx := context.Background()
	q, err := Open(ctx, urls, Options{Name: prefix + "-front", Prefix: prefix, RetryFor: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				if _, err := q.Push(ctx, workJob(fmt.Sprintf("%s-%04d", prefix, i), workMS), executor.PushOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	start := time.Now()
	var stops []func()
	for i := range k {
		stops = append(stops, startWorker(t, urls, prefix, fmt.Sprintf("%s-w%d", prefix, i+1), 10*time.Second, nil))
	}
	deadline := time.Now().Add(5 * time.Minute)
	for len(q.idx.history()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d prompts done after 5 minutes", len(q.idx.history()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wall := time.Since(start)
	for _, stop := range stops {
		stop()
	}
	hs, err := q.ListHistory(ctx, -1, -1)
	if err != nil || len(hs) != n {
		t.Fatalf("history: %d entries, %v; want %d", len(hs), err, n)
	}
	for _, h := range hs {
		if h.Status.StatusStr != executor.StatusSuccess {
			t.Fatalf("%s: %s", h.Prompt.ID, h.Status.StatusStr)
		}
	}
	return wall
}

// TestThroughput: 1,000 model-free prompts (Work 20 ms → SaveText) across three
// workers of a 3-node cluster, against 250 on one worker; it prints both rates and
// the per-prompt overhead (wall × workers / prompts − work). Timings are printed,
// never asserted; codex/scale-out.md records them with the machine's load.
func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("1,250 prompts on a 3-node cluster: skipped with -short")
	}
	const workMS = 20
	urls := clientURLs(startCluster(t, 3))
	one := throughput(t, urls, "one", 1, 250, workMS)
	three := throughput(t, urls, "three", 3, 1000, workMS)
	r1, r3 := 250/one.Seconds(), 1000/three.Seconds()
	over := func(wall time.Duration, k, n int) float64 {
		return wall.Seconds()*1000*float64(k)/float64(n) - workMS
	}
	t.Logf("1 worker: 250 prompts in %s = %.1f prompts/s (overhead %.1f ms/prompt); 3 workers: 1000 prompts in %s = %.1f prompts/s (overhead %.1f ms/prompt); 3 workers / 1 worker = %.2fx",
		one.Round(time.Millisecond), r1, over(one, 1, 250), three.Round(time.Millisecond), r3, over(three, 3, 1000), r3/r1)
}

// BenchmarkClusterThroughput runs b.N model-free prompts (Work 20 ms → SaveText) on
// 1 and on 3 workers of a 3-node cluster and reports prompts/s and the per-prompt
// overhead.
func BenchmarkClusterThroughput(b *testing.B) {
	const workMS = 20
	urls := clientURLs(startCluster(b, 3))
	for _, k := range []int{1, 3} {
		b.Run(fmt.Sprintf("workers=%d", k), func(b *testing.B) {
			wall := throughput(b, urls, fmt.Sprintf("bench%d-%d", k, b.N), k, b.N, workMS)
			b.ReportMetric(float64(b.N)/wall.Seconds(), "prompts/s")
			b.ReportMetric(wall.Seconds()*1000*float64(k)/float64(b.N)-workMS, "overhead-ms/prompt")
		})
	}
}

// TestStalledNode: a node that reports no progress for longer than the hang timeout
// stops its worker's heartbeats; the lease lapses, another worker runs the prompt,
// and the first run is interrupted and recorded nowhere.
func TestStalledNode(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a lease: skipped with -short")
	}
	n := startNode(t)
	f := startFront(t, n.ClientURL(), "stall", "front")
	stalled := testWorkerOptions("stalls", "stall", filepath.Join(t.TempDir(), "stalls"), time.Second)
	stalled.Queue.HangTimeout = 300 * time.Millisecond
	startWorkerWith(t, n.ClientURL(), stalled)
	waitFor(t, 30*time.Second, "the first worker's advert", func() bool { return len(f.q.peers.live()) == 1 })
	job := workJob("quiet", 2500)
	job.Prompt["1"].Inputs["steps"] = int64(1) // no progress until the end
	if _, err := f.q.Push(context.Background(), job, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the prompt to run on the first worker", func() bool { return len(runningOn(f.q)["stalls"]) == 1 })
	startWorker(t, n.ClientURL(), "stall", "patient", time.Second, nil)
	waitFor(t, 60*time.Second, "the prompt in the history", func() bool {
		rec, _ := f.q.idx.get("quiet")
		return rec != nil && rec.History != nil
	})
	e, err := f.q.GetHistory(context.Background(), "quiet")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(e.Outputs)
	if e.Status.StatusStr != executor.StatusSuccess || !bytes.Contains(out, []byte(`"subfolder":"patient"`)) {
		t.Fatalf("history entry: %s %s", e.Status.StatusStr, out)
	}
	// The stalled run was interrupted when its worker saw the lease gone: it left no
	// output (wait out the rest of its node to be sure).
	time.Sleep(time.Second)
	list, err := f.q.objs.List(context.Background())
	if err != nil || len(list) != 1 || list[0].Name != "output/patient/out_00001_.txt" {
		t.Fatalf("objects %v, %v; want the one output of the patient worker", list, err)
	}
	if hs, _ := f.q.ListHistory(context.Background(), -1, -1); len(hs) != 1 {
		t.Fatalf("%d history entries, want 1", len(hs))
	}
}
