package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/queuetest"
)

// startNode starts a single embedded JetStream node for a test.
func startNode(t testing.TB) *Node {
	t.Helper()
	n, err := StartNode(NodeOptions{StoreDir: t.TempDir(), Host: "127.0.0.1", Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

var prefixes atomic.Int64

// TestQueueConformance runs the executor.Queue suite on JetStream: each subtest gets
// its own streams (a fresh prefix) on one embedded node, and every open of one
// subtest is the same process name on the same streams, as a restarted worker.
func TestQueueConformance(t *testing.T) {
	n := startNode(t)
	queuetest.Run(t, func(t *testing.T) queuetest.Opener {
		prefix := fmt.Sprintf("t%d", prefixes.Add(1))
		return func(t *testing.T, o queuetest.Options) executor.Queue {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			q, err := Open(ctx, n.ClientURL(), Options{Name: "worker-1", Prefix: prefix, MaxAttempts: o.MaxAttempts, MaxHistory: o.MaxHistory, LeaseTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return q
		}
	})
}
