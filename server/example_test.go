package server_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/nodes/builtin"
	"github.com/forgeflow/forgeflow/server"
)

// A server over the built-in nodes, without a queue: enough for /object_info, /view and
// uploads. cmd/forgeflow adds the executor (Options.Engine) and forwards its events
// with Server.Forward.
func Example() {
	base, _ := os.MkdirTemp("", "forgeflow-example")
	defer os.RemoveAll(base)
	reg := nodes.NewRegistry()
	if err := builtin.Register(reg, builtin.Options{}); err != nil {
		panic(err)
	}
	srv, err := server.New(server.Options{
		Dirs: server.Dirs{
			Output: filepath.Join(base, "output"), Input: filepath.Join(base, "input"),
			Temp: filepath.Join(base, "temp"), User: filepath.Join(base, "user"),
		},
		Nodes: reg,
	})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	resp, err := hs.Client().Get(hs.URL + "/api/object_info/ImageInvert")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var info map[string]struct {
		Category string   `json:"category"`
		Output   []string `json:"output"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		panic(err)
	}
	fmt.Println(resp.StatusCode, info["ImageInvert"].Category, info["ImageInvert"].Output)
	// Output: 200 image [IMAGE]
}
