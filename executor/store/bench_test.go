package store

import (
	"context"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/executor"
)

// BenchmarkPushAck measures one durable Push plus Lease and Ack (three fsynced
// transactions): the queue's cost per prompt, dominated by the disk's sync latency.
func BenchmarkPushAck(b *testing.B) {
	s, err := Open(b.TempDir()+"/q.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		j := job("p" + strconv.Itoa(i))
		i++
		if _, err := s.Push(ctx, j, executor.PushOptions{}); err != nil {
			b.Fatal(err)
		}
		l, err := s.Lease(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess)); err != nil {
			b.Fatal(err)
		}
	}
}
