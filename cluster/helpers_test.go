package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/server"
)

// Environment of a worker subprocess: the test binary runs itself as a worker.
const (
	envWorkerURLs   = "FORGEFLOW_TEST_WORKER_URLS"
	envWorkerName   = "FORGEFLOW_TEST_WORKER_NAME"
	envWorkerDir    = "FORGEFLOW_TEST_WORKER_DIR"
	envWorkerPrefix = "FORGEFLOW_TEST_WORKER_PREFIX"
	envWorkerLease  = "FORGEFLOW_TEST_WORKER_LEASE"
)

func TestMain(m *testing.M) {
	if urls := os.Getenv(envWorkerURLs); urls != "" {
		os.Exit(workerMain(urls))
	}
	os.Exit(m.Run())
}

// workerMain is a worker process over the test nodes, until SIGTERM.
func workerMain(urls string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	lease, _ := time.ParseDuration(os.Getenv(envWorkerLease))
	name, dir := os.Getenv(envWorkerName), os.Getenv(envWorkerDir)
	nc, err := Connect(urls, name, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	o := testWorkerOptions(name, os.Getenv(envWorkerPrefix), dir, lease)
	o.Queue.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := NewWorker(ctx, nc, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func testWorkerOptions(name, prefix, dir string, lease time.Duration) WorkerOptions {
	return WorkerOptions{
		Queue:  Options{Name: name, Prefix: prefix, LeaseTimeout: lease, RetryFor: 2 * time.Minute},
		Engine: executor.Options{Registry: testRegistry(), Dirs: testDirs(dir), Cache: executor.CacheOptions{Mode: executor.CacheNone}},
		Models: func() []string { return nil },
	}
}

func testDirs(dir string) nodes.Dirs {
	return nodes.Dirs{Output: filepath.Join(dir, "output"), Input: filepath.Join(dir, "input"), Temp: filepath.Join(dir, "temp")}
}

// fakeNode is a test node: a schema and a function.
type fakeNode struct {
	schema *graph.Schema
	run    func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error)
}

func (f *fakeNode) Schema() *graph.Schema { return f.schema }
func (f *fakeNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	return f.run(ctx, env, in)
}

// testRegistry has model-free nodes: Work sleeps ms milliseconds in steps, reporting
// progress (a stand-in for a sampler whose time is spent on a GPU, not this
// machine's CPU); SaveText writes its text to a new file in the output folder and
// shows it as an image entry, as SaveImage does.
func testRegistry() *nodes.Registry {
	reg := nodes.NewRegistry()
	intIn := func(name string, def int) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeInt, Default: int64(def)}
	}
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(reg.Register(&fakeNode{
		schema: &graph.Schema{Name: "Work", Inputs: []graph.Input{intIn("ms", 10), intIn("steps", 1), {Name: "tag", Type: graph.TypeString}},
			Outputs: []graph.Output{{Type: graph.TypeString, Name: "STRING"}}},
		run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			ms, _ := in.Int("ms")
			steps, _ := in.Int("steps")
			tag, _ := in.String("tag")
			steps = max(steps, 1)
			for s := range steps {
				select {
				case <-ctx.Done():
					return nodes.Result{}, ctx.Err()
				case <-time.After(time.Duration(ms) * time.Millisecond / time.Duration(steps)):
				}
				if env.Progress != nil {
					env.Progress(int(s+1), int(steps))
				}
			}
			return nodes.Result{Outputs: []any{tag}}, nil
		},
	}))
	must(reg.Register(&fakeNode{
		schema: &graph.Schema{Name: "SaveText", OutputNode: true, Inputs: []graph.Input{{Name: "text", Type: graph.TypeString}, {Name: "filename_prefix", Type: graph.TypeString}}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			text, _ := in.String("text")
			prefix, _ := in.String("filename_prefix")
			if err := os.MkdirAll(env.Dirs.Output, 0o755); err != nil {
				return nodes.Result{}, err
			}
			for n := 1; ; n++ {
				name := fmt.Sprintf("%s_%05d_.txt", prefix, n)
				f, err := os.OpenFile(filepath.Join(env.Dirs.Output, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
				if errors.Is(err, fs.ErrExist) {
					continue
				}
				if err != nil {
					return nodes.Result{}, err
				}
				_, err = f.WriteString(text)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				return nodes.Result{UI: map[string]any{"images": []any{map[string]any{"filename": name, "subfolder": "", "type": "output"}}}}, err
			}
		},
	}))
	return reg
}

// workPrompt is Work(ms, tag) → SaveText.
func workPrompt(ms int, tag string) map[string]any {
	return map[string]any{
		"1": map[string]any{"class_type": "Work", "inputs": map[string]any{"ms": ms, "steps": 3, "tag": tag}},
		"2": map[string]any{"class_type": "SaveText", "inputs": map[string]any{"text": []any{"1", 0}, "filename_prefix": "out"}},
	}
}

func workJob(id string, ms int) *executor.Job {
	p := graph.Prompt{
		"1": {ClassType: "Work", Inputs: map[string]any{"ms": int64(ms), "steps": int64(3), "tag": id}},
		"2": {ClassType: "SaveText", Inputs: map[string]any{"text": graph.NewLink("1", 0), "filename_prefix": "out"}},
	}
	return &executor.Job{ID: id, Prompt: p, ExtraData: map[string]any{}, Outputs: []string{"2"}}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts n embedded JetStream nodes routed to each other on loopback
// and waits for a meta leader.
func startCluster(t testing.TB, n int) []*Node {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	// A clustered node's start waits for its peers: start them together.
	nodesOut := make([]*Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
			}
		}
		dir := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodesOut[i], errs[i] = StartNode(NodeOptions{Name: fmt.Sprintf("n%d", i+1), StoreDir: dir, Host: "127.0.0.1", Port: 0,
				ClusterName: "test", ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes})
		}()
	}
	wg.Wait()
	for i, node := range nodesOut {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(node.Shutdown)
	}
	deadline := time.Now().Add(30 * time.Second)
	for metaLeader(nodesOut) == nil {
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nodesOut
}

func metaLeader(ns []*Node) *Node {
	for _, n := range ns {
		if n != nil && n.IsMetaLeader() {
			return n
		}
	}
	return nil
}

func clientURLs(ns []*Node) string {
	var us []string
	for _, n := range ns {
		us = append(us, n.ClientURL())
	}
	return strings.Join(us, ",")
}

// front is a serve process in the test: a queue, an engine that validates and
// relays the cluster's events, and the HTTP server.
type front struct {
	q    *Queue
	eng  *executor.Engine
	srv  *server.Server
	http *httptest.Server
	dir  string
}

func startFront(t testing.TB, urls, prefix, name string) *front {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	q, err := Open(ctx, urls, Options{Name: name, Prefix: prefix, RetryFor: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	dir := t.TempDir()
	reg := testRegistry()
	eng, err := executor.New(executor.Options{Registry: reg, Queue: q, Dirs: testDirs(dir)})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Events(ctx, eng.Publish); err != nil {
		t.Fatal(err)
	}
	d := testDirs(dir)
	srv, err := server.New(server.Options{Dirs: server.Dirs{Output: d.Output, Input: d.Input, Temp: d.Temp, User: filepath.Join(dir, "user")},
		Nodes: reg, Engine: eng, Interrupt: func(id string) { _ = q.Interrupt(id) }, FetchFile: q.FetchOutput})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d.Output, d.Input, d.Temp} {
		os.MkdirAll(p, 0o755)
	}
	go srv.Forward(ctx)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { srv.Close() })
	return &front{q: q, eng: eng, srv: srv, http: hs, dir: dir}
}

// proc is a worker subprocess.
type proc struct {
	name, dir string
	cmd       *exec.Cmd
	log       string
}

func startWorkerProc(t testing.TB, urls, prefix, name string, lease time.Duration) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{name: name, dir: dir, log: filepath.Join(dir, "worker.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), envWorkerURLs+"="+urls, envWorkerName+"="+name, envWorkerDir+"="+dir,
		envWorkerPrefix+"="+prefix, envWorkerLease+"="+lease.String())
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Kill()
		p.cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("worker %s log:\n%s", name, b)
		}
	})
	return p
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runningOn returns the prompts the index shows running, by worker.
func runningOn(q *Queue) map[string][]string {
	running, _ := q.idx.jobs()
	out := map[string][]string{}
	for _, e := range running {
		out[e.rec.Job.Lease.Worker] = append(out[e.rec.Job.Lease.Worker], e.id)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
