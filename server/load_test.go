//go:build integration

package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoad is the load test of issue 16: 50 websocket clients queue 1,000 prompts (20
// each, all at once) on a server over the real engine, bbolt store and listener. Every
// prompt runs and lands in the history as a success, every client gets the events of
// its own prompts (through the final "executing" with node null) and none of anyone
// else's. The throughput is logged, never asserted (make load; or
// go test -tags integration -run TestLoad -v ./server).
func TestLoad(t *testing.T) {
	const clients, each = 50, 20
	ts, _ := engineServer(t, sinkNode{})
	addr := serveReal(t, ts)
	base := "http://" + addr

	type client struct {
		id     string
		mu     sync.Mutex
		mine   map[string]bool // prompt ids this client queued
		done   map[string]bool // prompt ids whose end this client saw
		others []string        // prompt ids of other clients it was sent events of
		gone   error           // why the server closed the websocket
	}
	cs := make([]*client, clients)
	var readers sync.WaitGroup
	for i := range cs {
		c := &client{id: fmt.Sprintf("load-%02d", i), mine: map[string]bool{}, done: map[string]bool{}}
		cs[i] = c
		conn := dialWS(t, base, c.id)
		readWS(t, conn)
		conn.SetReadDeadline(time.Time{})
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, data, err := conn.ReadMessage()
				if err != nil {
					c.mu.Lock()
					c.gone = err
					c.mu.Unlock()
					return
				}
				var m struct {
					Type string `json:"type"`
					Data struct {
						PromptID string `json:"prompt_id"`
						Node     any    `json:"node"`
					} `json:"data"`
				}
				if json.Unmarshal(data, &m) != nil || m.Data.PromptID == "" {
					continue
				}
				c.mu.Lock()
				if !c.mine[m.Data.PromptID] {
					c.others = append(c.others, m.Data.PromptID)
				}
				if m.Type == "executing" && m.Data.Node == nil {
					c.done[m.Data.PromptID] = true
				}
				c.mu.Unlock()
			}
		}()
	}

	start := time.Now()
	var posts sync.WaitGroup
	errs := make(chan error, clients*each)
	for i, c := range cs {
		for j := 0; j < each; j++ {
			id := fmt.Sprintf("00000000-0000-4000-8000-%06d%06d", i, j) // POST /prompt takes canonical UUIDs
			c.mu.Lock()
			c.mine[id] = true
			c.mu.Unlock()
			posts.Add(1)
			go func() {
				defer posts.Done()
				body := fmt.Sprintf(`{"client_id": %q, "prompt_id": %q, "prompt": {"1": {"class_type": "Sink", "inputs": {"width": 8, "seed": %d}}}}`,
					c.id, id, len(id)*1000+j)
				resp, err := http.Post(base+"/prompt", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("POST /prompt %s: %d", id, resp.StatusCode)
				}
			}()
		}
	}
	posts.Wait()
	queued := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		finished := 0
		for _, c := range cs {
			c.mu.Lock()
			for id := range c.mine {
				if c.done[id] {
					finished++
				}
			}
			c.mu.Unlock()
		}
		if finished == clients*each {
			break
		}
		gone := 0
		for _, c := range cs {
			c.mu.Lock()
			if c.gone != nil {
				gone++
			}
			c.mu.Unlock()
		}
		if gone > 0 {
			for _, c := range cs {
				if c.gone != nil {
					t.Log(c.id, c.gone)
				}
			}
			t.Fatalf("%d websocket clients were disconnected; %d of %d prompts ended", gone, finished, clients*each)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d prompts ended within 5 minutes", finished, clients*each)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	for _, c := range cs {
		c.mu.Lock()
		if len(c.others) > 0 {
			t.Errorf("client %s got events of %d prompts of other clients, e.g. %s", c.id, len(c.others), c.others[0])
		}
		c.mu.Unlock()
	}
	resp, err := http.Get(base + "/history?max_items=2000")
	if err != nil {
		t.Fatal(err)
	}
	var hist map[string]struct {
		Status struct {
			StatusStr string `json:"status_str"`
		} `json:"status"`
	}
	json.NewDecoder(resp.Body).Decode(&hist)
	resp.Body.Close()
	ok := 0
	for _, h := range hist {
		if h.Status.StatusStr == "success" {
			ok++
		}
	}
	if ok != clients*each {
		t.Errorf("%d successful history entries, want %d", ok, clients*each)
	}
	ts.Close()
	t.Logf("throughput: %d prompts from %d websocket clients in %v (queued in %v): %.0f prompts/s",
		clients*each, clients, elapsed.Round(time.Millisecond), queued.Round(time.Millisecond), float64(clients*each)/elapsed.Seconds())
}
