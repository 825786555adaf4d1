package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// postJSON posts v to the front's path and returns the answer's status and body.
func postJSON(t testing.TB, f *front, path string, v any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(v)
	res, err := http.Post(f.http.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

func getJSON(t testing.TB, f *front, path string, v any) {
	t.Helper()
	res, err := http.Get(f.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

type historyItem struct {
	Outputs map[string]struct {
		Images []struct {
			Filename, Subfolder, Type string
		} `json:"images"`
	} `json:"outputs"`
	Status struct {
		StatusStr string `json:"status_str"`
		Messages  []json.RawMessage
	} `json:"status"`
}

func history(t testing.TB, f *front) map[string]historyItem {
	var h map[string]historyItem
	getJSON(t, f, "/history", &h)
	return h
}

// wsClient collects the JSON event types a websocket client receives, by prompt.
type wsClient struct {
	mu   sync.Mutex
	seen map[string][]string
}

func dialWS(t testing.TB, f *front, clientID string) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(f.http.URL, "http") + "/ws?clientId=" + url.QueryEscape(clientID)
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &wsClient{seen: map[string][]string{}}
	go func() {
		for {
			typ, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if typ != websocket.TextMessage {
				continue
			}
			var m struct {
				Type string `json:"type"`
				Data struct {
					PromptID string `json:"prompt_id"`
					Node     any    `json:"node"`
				} `json:"data"`
			}
			if json.Unmarshal(b, &m) != nil || m.Data.PromptID == "" {
				continue
			}
			typ2 := m.Type
			if m.Type == "executing" && m.Data.Node == nil {
				typ2 = "done"
			}
			c.mu.Lock()
			c.seen[m.Data.PromptID] = append(c.seen[m.Data.PromptID], typ2)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *wsClient) saw(id, typ string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.seen[id] {
		if s == typ {
			return true
		}
	}
	return false
}

// TestClusterFailover: a 3-node JetStream cluster on loopback, two serve fronts and
// three worker processes; 200 prompts go in through both fronts; one worker is
// killed (SIGKILL) while it runs a prompt, then the JetStream meta leader is shut
// down. Every prompt ends in the history exactly once, with its output file readable
// through either front, one object per output in the store, and websocket events of
// prompts sent through front B reach a client of front A.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster and 3 worker processes: skipped with -short")
	}
	const prompts, workMS, longMS, lease = 200, 100, 2000, 2 * time.Second
	nodes := startCluster(t, 3)
	urls := clientURLs(nodes)
	a := startFront(t, urls, "ff", "front-a")
	b := startFront(t, urls, "ff", "front-b")
	var procs []*proc
	for i := 1; i <= 3; i++ {
		procs = append(procs, startWorkerProc(t, urls, "ff", "w"+itoa(i), lease))
	}
	waitFor(t, 60*time.Second, "three worker adverts", func() bool { return len(a.q.peers.live()) == 3 })
	ws := dialWS(t, a, "client-1")

	start := time.Now()
	mon := watchProgress(t, b.q)
	ids := make([]string, prompts)
	for i := range prompts {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i) // POST /prompt takes canonical UUIDs
		f := a
		if i%2 == 1 {
			f = b
		}
		ms := workMS
		if i%40 == 20 {
			ms = longMS // a prompt long enough to be killed in the middle of for sure
		}
		code, body := postJSON(t, f, "/prompt", map[string]any{"prompt": workPrompt(ms, ids[i]), "prompt_id": ids[i], "client_id": "client-1"})
		if code != http.StatusOK {
			t.Fatalf("POST /prompt %s: %d %s", ids[i], code, body)
		}
	}
	t.Logf("200 prompts accepted through two fronts in %s", time.Since(start).Round(time.Millisecond))

	// The prompts done in the calm phase: their events have a second to arrive
	// before anything is killed.
	waitFor(t, 60*time.Second, "10 prompts finished", func() bool { return len(a.q.idx.history()) >= 10 })
	calm := map[string]bool{}
	for _, e := range a.q.idx.history() {
		calm[e.id] = true
	}
	time.Sleep(time.Second)

	// Kill a worker while it runs a prompt.
	var victim *proc
	var victimPrompt string
	waitFor(t, 60*time.Second, "a worker running a prompt", func() bool {
		// A long prompt leased less than a second ago: the kill lands mid-prompt.
		running, _ := a.q.idx.jobs()
		for _, e := range running {
			l := e.rec.Job.Lease
			if e.rec.Job.Item.Prompt["1"].Inputs["ms"] != json.Number(itoa(longMS)) || time.Since(time.UnixMilli(l.Since)) > time.Second {
				continue
			}
			for _, p := range procs {
				if p.name == l.Worker {
					victim, victimPrompt = p, e.id
					return true
				}
			}
		}
		return false
	})
	killed := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var victimDone atomic.Int64
	go func() {
		for {
			if rec, _ := a.q.idx.get(victimPrompt); rec != nil && rec.History != nil {
				victimDone.Store(int64(time.Since(killed)))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// Then shut down the JetStream meta leader.
	time.Sleep(200 * time.Millisecond)
	leader := metaLeader(nodes)
	if leader == nil {
		t.Fatal("no meta leader")
	}
	before := len(a.q.idx.history())
	down := time.Now()
	leader.Shutdown()
	for i, n := range nodes {
		if n == leader {
			nodes[i] = nil
		}
	}
	if before >= prompts {
		t.Fatal("every prompt finished before the meta leader went down: the test proves nothing")
	}
	waitFor(t, 30*time.Second, "a new meta leader", func() bool { return metaLeader(nodes) != nil })
	newLeader := time.Since(down)
	waitFor(t, 120*time.Second, "every prompt in the history", func() bool {
		n, err := b.q.Remaining(context.Background())
		return err == nil && n == 0 && len(b.q.idx.history()) >= prompts
	})
	// Front A's view may trail B's by a moment.
	waitFor(t, 30*time.Second, "front A to see the killed worker's prompt finished", func() bool { return victimDone.Load() != 0 })
	t.Logf("worker %s killed (SIGKILL) while running %s: the prompt finished on another worker %s later (lease timeout %s)",
		victim.name, victimPrompt, time.Duration(victimDone.Load()).Round(time.Millisecond), lease)
	stall := mon.longestStall(down)
	t.Logf("meta leader %s shut down with %d of %d prompts finished: new meta leader after %s; longest time without a prompt finishing after that %s (before it %s); all done %s after the first was accepted",
		leader.Name(), before, prompts, newLeader.Round(time.Millisecond), stall.Round(time.Millisecond), mon.longestStallBetween(start, killed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Exactly once, with outputs, through either front.
	h := history(t, b)
	if len(h) != prompts {
		t.Fatalf("history has %d entries, want %d", len(h), prompts)
	}
	objects := map[string]bool{}
	for _, id := range ids {
		e, ok := h[id]
		if !ok {
			t.Fatalf("%s missing from the history", id)
		}
		if e.Status.StatusStr != executor.StatusSuccess {
			t.Fatalf("%s: status %s: %s", id, e.Status.StatusStr, e.Status.Messages)
		}
		starts := 0
		for _, m := range e.Status.Messages {
			if bytes.HasPrefix(m, []byte(`["execution_start"`)) {
				starts++
			}
		}
		imgs := e.Outputs["2"].Images
		if starts != 1 || len(imgs) != 1 {
			t.Fatalf("%s: %d execution_start messages, %d outputs; want 1 and 1", id, starts, len(imgs))
		}
		img := imgs[0]
		objects[img.Type+"/"+img.Subfolder+"/"+img.Filename] = true
		if id == victimPrompt && img.Subfolder == victim.name {
			t.Errorf("%s finished on the killed worker %s", id, victim.name)
		}
		f := a
		if len(objects)%2 == 0 {
			f = b
		}
		res, err := http.Get(f.http.URL + "/view?" + url.Values{"filename": {img.Filename}, "subfolder": {img.Subfolder}, "type": {img.Type}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != id {
			t.Fatalf("%s: /view of %+v = %d %q, want the prompt's text", id, img, res.StatusCode, body)
		}
	}
	if len(objects) != prompts {
		t.Fatalf("%d distinct output files for %d prompts", len(objects), prompts)
	}
	// One object per output: the killed run's uploads are swept.
	waitFor(t, 30*time.Second, "the object store to hold exactly the history's outputs", func() bool {
		list, err := a.q.objs.List(context.Background())
		if err != nil && err != jetstream.ErrNoObjectsFound {
			return false
		}
		for _, o := range list {
			if !objects[o.Name] {
				return false
			}
		}
		return len(list) == prompts
	})
	// Events of prompts sent through B reached A's client (in the calm phase; events
	// are at-most-once across a node failure).
	for id := range calm {
		if !ws.saw(id, "executed") || !ws.saw(id, "execution_success") || !ws.saw(id, "done") {
			t.Errorf("client of front A missed events of %s: %v", id, ws.seen[id])
		}
	}
}

// TestHangingWorker: a worker process that stops (SIGSTOP) while it runs a prompt
// loses its lease, another worker runs the prompt, and when the stopped worker
// resumes and finishes, its result is refused: one history entry, one output file.
func TestHangingWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("worker processes: skipped with -short")
	}
	const lease = time.Second
	n := startNode(t)
	f := startFront(t, n.ClientURL(), "hang", "front")
	w1 := startWorkerProc(t, n.ClientURL(), "hang", "w1", lease)
	w2 := startWorkerProc(t, n.ClientURL(), "hang", "w2", lease)
	waitFor(t, 60*time.Second, "two worker adverts", func() bool { return len(f.q.peers.live()) == 2 })
	if _, err := f.q.Push(context.Background(), workJob("slow", 3000), executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	var hung, other *proc
	waitFor(t, 30*time.Second, "the prompt to run", func() bool {
		run := runningOn(f.q)
		switch {
		case len(run["w1"]) > 0:
			hung, other = w1, w2
		case len(run["w2"]) > 0:
			hung, other = w2, w1
		}
		return hung != nil
	})
	stopped := time.Now()
	if err := hung.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the prompt to finish on the other worker", func() bool {
		rec, _ := f.q.idx.get("slow")
		return rec != nil && rec.History != nil
	})
	t.Logf("worker %s stopped (SIGSTOP) mid-prompt: %s finished it %s later (lease %s, prompt 3s)", hung.name, other.name, time.Since(stopped).Round(time.Millisecond), lease)
	if err := hung.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The resumed worker finishes its run (at most 3s) and must then drop it.
	waitFor(t, 30*time.Second, "the resumed worker to drop its run", func() bool {
		b, _ := os.ReadFile(hung.log)
		return bytes.Contains(b, []byte("lease lost")) || bytes.Contains(b, []byte("lease was lost"))
	})
	time.Sleep(time.Second)
	e, err := f.q.GetHistory(context.Background(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(e.Outputs)
	if e.Status.StatusStr != executor.StatusSuccess || !bytes.Contains(out, []byte(`"subfolder":"`+other.name+`"`)) {
		t.Fatalf("history entry: %s %s", e.Status.StatusStr, out)
	}
	if hs, _ := f.q.ListHistory(context.Background(), -1, -1); len(hs) != 1 {
		t.Fatalf("%d history entries, want 1", len(hs))
	}
	left, _ := filepath.Glob(filepath.Join(hung.dir, "output", hung.name, "*"))
	if len(left) != 0 {
		t.Errorf("the hung worker's refused run left files: %v", left)
	}
	list, _ := f.q.objs.List(context.Background())
	if len(list) != 1 || !strings.HasPrefix(list[0].Name, "output/"+other.name+"/") {
		var names []string
		for _, o := range list {
			names = append(names, o.Name)
		}
		t.Errorf("objects %v, want the one output of %s", names, other.name)
	}
}

// progress samples how many prompts a queue's history holds, to measure recovery as
// the longest time without a prompt finishing.
type progress struct {
	mu    sync.Mutex
	times []time.Time // when the count went up
}

func watchProgress(t testing.TB, q *Queue) *progress {
	p := &progress{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		last := len(q.idx.history())
		for ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
			if n := len(q.idx.history()); n > last {
				last = n
				p.mu.Lock()
				p.times = append(p.times, time.Now())
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// longestStall is the longest gap between finishing prompts from t0 on (t0 itself
// counts as the start of the first gap).
func (p *progress) longestStall(t0 time.Time) time.Duration {
	return p.longestStallBetween(t0, time.Now())
}

func (p *progress) longestStallBetween(t0, t1 time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	prev := t0
	for _, at := range p.times {
		if at.Before(t0) || at.After(t1) {
			continue
		}
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return longest
}
