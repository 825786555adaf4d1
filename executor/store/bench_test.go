package store

import (
	"context"
	"os"
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

// BenchmarkOpenCheck measures Open on a full history (DefaultMaxHistory entries of a
// 2 KB prompt each, written without fsync to set up): the page walk of checkFile and
// bbolt's own check, which every start runs, linear in the file.
func BenchmarkOpenCheck(b *testing.B) {
	path := b.TempDir() + "/q.db"
	s, err := Open(path, Options{noSync: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < executor.DefaultMaxHistory; i++ {
		j := bigJob("h" + strconv.Itoa(i))
		if err := s.PutHistory(ctx, entry(j, executor.StatusSuccess)); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	for b.Loop() {
		s, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	st, _ := os.Stat(path)
	b.ReportMetric(float64(st.Size())/(1<<20), "MB")
}
