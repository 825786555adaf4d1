package store

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/queuetest"
	"github.com/forgeflow/forgeflow/graph"
)

// TestQueueConformance runs the executor.Queue contract's suite on the bbolt store:
// every Open of one test's opener reopens the same file, as a restarted process does.
func TestQueueConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Opener {
		path := filepath.Join(t.TempDir(), "queue.db")
		return func(t *testing.T, o queuetest.Options) executor.Queue {
			s, err := Open(path, Options{MaxAttempts: o.MaxAttempts, MaxHistory: o.MaxHistory})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// TestOpenLocked: a second process (here a second Open) cannot open a file in use.
func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := Open(path, Options{Timeout: 50 * time.Millisecond}); err == nil {
		s2.Close()
		t.Fatal("a second Open of a file in use succeeded")
	}
}

// TestPendingKeyOrder: the byte order of pending keys is the numeric order of the
// numbers, then the push order.
func TestPendingKeyOrder(t *testing.T) {
	numbers := []float64{math.Inf(-1), -1e300, -3, -2.5, -1, math.Copysign(0, -1), 0, 1e-300, 0.5, 1, 2, 1e300, math.Inf(1)}
	var prev []byte
	for i, n := range numbers {
		k := pendingKey(n, 7)
		if prev != nil && bytes.Compare(prev, k) >= 0 && !(n == 0 && numbers[i-1] == 0) {
			t.Errorf("key of %v does not sort after the key of %v", n, numbers[i-1])
		}
		prev = k
	}
	if !bytes.Equal(pendingKey(math.Copysign(0, -1), 1), pendingKey(0, 1)) {
		t.Error("-0 and +0 have different keys")
	}
	if bytes.Compare(pendingKey(1, 1), pendingKey(1, 2)) >= 0 {
		t.Error("equal numbers do not sort in push order")
	}
}

func job(id string) *executor.Job {
	return &executor.Job{
		ID:        id,
		Prompt:    graph.Prompt{"1": {ClassType: "Foo", Inputs: map[string]any{"value": 1}}},
		ExtraData: map[string]any{"client_id": "c1"},
		Outputs:   []string{"1"},
	}
}

func entry(j *executor.Job, status string) *executor.HistoryEntry {
	return &executor.HistoryEntry{
		Prompt:  *j,
		Outputs: map[string]map[string]any{"1": {"images": []any{map[string]any{"filename": "a.png"}}}},
		Status:  executor.Status{StatusStr: status, Completed: status == executor.StatusSuccess, Messages: []executor.Message{}},
		Meta:    map[string]executor.NodeMeta{},
	}
}
