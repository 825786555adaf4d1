package server

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/store"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/nodes/builtin"
)

// engineServer is a server over a real executor, durable store and the built-in nodes.
func engineServer(t *testing.T, extra ...nodes.Node) (*testServer, *executor.Engine) {
	t.Helper()
	ts := newTestServer(t, nil)
	reg := nodes.NewRegistry()
	for _, n := range extra {
		if err := reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	ndirs := nodes.Dirs{Output: ts.dirs.Output, Input: ts.dirs.Input, Temp: ts.dirs.Temp}
	if err := builtin.Register(reg, builtin.Options{Dirs: ndirs}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "queue.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := executor.New(executor.Options{Registry: reg, Queue: st, Dirs: ndirs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { eng.Run(ctx); done <- struct{}{} }()
	s, err := New(Options{Dirs: ts.dirs, Nodes: reg, Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.Forward(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		s.Close()
		st.Close()
	})
	ts.Server, ts.engine, ts.queue = s, eng, st
	return ts, eng
}
