// Command probe drives a running forgeflow serve for the figures of codex/server.md
// ("Figures: hostile input"): a long chain followed over the websocket, a long cycle,
// thousands of idle connections, and the latency of a request meanwhile.
//
//	go run ./server/internal/probe -addr 127.0.0.1:18190 -mode chain -n 10000
//	go run ./server/internal/probe -mode cycle -n 10000
//	go run ./server/internal/probe -mode idle -n 10000 -hold 40s
//	go run ./server/internal/probe -mode probe
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// chain is EmptyImage → n-2 ImageInvert → PreviewImage.
func chain(n int) string {
	var b strings.Builder
	b.WriteString(`{"0": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}`)
	for i := 1; i < n-1; i++ {
		fmt.Fprintf(&b, `, "%d": {"class_type": "ImageInvert", "inputs": {"image": ["%d", 0]}}`, i, i-1)
	}
	fmt.Fprintf(&b, `, "%d": {"class_type": "PreviewImage", "inputs": {"images": ["%d", 0]}}}`, n-1, n-2)
	return b.String()
}

// cycle is n-1 ImageInvert nodes in a ring and a PreviewImage reading it.
func cycle(n int) string {
	var b strings.Builder
	b.WriteString(`{`)
	for i := 0; i < n-1; i++ {
		fmt.Fprintf(&b, `"%d": {"class_type": "ImageInvert", "inputs": {"image": ["%d", 0]}}, `, i, (i+n-2)%(n-1))
	}
	fmt.Fprintf(&b, `"s": {"class_type": "PreviewImage", "inputs": {"images": ["%d", 0]}}}`, n-2)
	return b.String()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18190", "")
	mode := flag.String("mode", "chain", "chain, cycle, idle or probe")
	n := flag.Int("n", 10000, "nodes (chain, cycle) or connections (idle)")
	hold := flag.Duration("hold", 30*time.Second, "how long idle connections stay open")
	flag.Parse()
	switch *mode {
	case "chain":
		c, _, err := websocket.DefaultDialer.Dial("ws://"+*addr+"/ws?clientId=m", nil)
		if err != nil {
			panic(err)
		}
		start := time.Now()
		resp, err := http.Post("http://"+*addr+"/prompt", "application/json", strings.NewReader(`{"client_id": "m", "prompt": `+chain(*n)+`}`))
		if err != nil {
			panic(err)
		}
		var ans struct {
			PromptID string `json:"prompt_id"`
		}
		json.NewDecoder(resp.Body).Decode(&ans)
		resp.Body.Close()
		msgs, bytes := 0, 0
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				panic(err)
			}
			msgs++
			bytes += len(data)
			var m struct {
				Type string
				Data struct {
					Node     any
					PromptID string `json:"prompt_id"`
				}
			}
			json.Unmarshal(data, &m)
			if m.Type == "executing" && m.Data.Node == nil && m.Data.PromptID == ans.PromptID {
				break
			}
		}
		fmt.Printf("chain of %d nodes: %v from POST to the final executing; %d websocket messages, %d KB\n", *n, time.Since(start).Round(time.Millisecond), msgs, bytes>>10)
	case "cycle":
		start := time.Now()
		resp, err := http.Post("http://"+*addr+"/prompt", "application/json", strings.NewReader(`{"prompt": `+cycle(*n)+`}`))
		if err != nil {
			panic(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("cycle of %d nodes: %d in %v, %d bytes\n", *n, resp.StatusCode, time.Since(start).Round(time.Millisecond), len(b))
	case "idle":
		// Open n connections and keep them idle; report how many the server closed.
		var conns []net.Conn
		for i := 0; i < *n; i++ {
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				fmt.Println("dial", i, err)
				break
			}
			conns = append(conns, c)
		}
		fmt.Printf("idle: %d connections open\n", len(conns))
		time.Sleep(*hold)
		var mu sync.Mutex
		closed := 0
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func(c net.Conn) {
				defer wg.Done()
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(make([]byte, 1)); err == io.EOF {
					mu.Lock()
					closed++
					mu.Unlock()
				}
				c.Close()
			}(c)
		}
		wg.Wait()
		fmt.Printf("idle: %d of %d closed by the server\n", closed, len(conns))
	case "probe":
		for i := 0; i < 5; i++ {
			start := time.Now()
			resp, err := http.Get("http://" + *addr + "/queue")
			if err != nil {
				fmt.Println("probe:", err)
				os.Exit(1)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Printf("probe: GET /queue %d in %v\n", resp.StatusCode, time.Since(start).Round(time.Microsecond))
			http.DefaultClient.CloseIdleConnections()
			time.Sleep(200 * time.Millisecond)
		}
	}
}
