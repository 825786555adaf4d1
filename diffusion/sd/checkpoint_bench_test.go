package sd

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/memory"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

var (
	benchOnce sync.Once
	benchPath string
	benchErr  error
)

// benchSD15 returns a full-size random SD1.5 checkpoint (fp16, 2.1 GB). It is written
// once into the system's temporary folder and reused by later runs: its bytes depend
// only on the spec and seed, and a file with another tensor list is rewritten.
func benchSD15(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() {
		s := SD15RandomSpec()
		s.Seed = 1
		benchPath = filepath.Join(os.TempDir(), "forgeflow-bench-sd15-random-fp16-seed1.safetensors")
		ts, err := s.Tensors()
		if err != nil {
			benchErr = err
			return
		}
		if f, err := safetensors.Open(benchPath); err == nil {
			n := len(f.Tensors())
			f.Close()
			if n == len(ts) {
				return
			}
		}
		tmp := benchPath + ".tmp"
		f, err := os.Create(tmp)
		if err != nil {
			benchErr = err
			return
		}
		if benchErr = WriteRandomCheckpoint(f, s); benchErr == nil {
			benchErr = f.Close()
		}
		if benchErr == nil {
			benchErr = os.Rename(tmp, benchPath)
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchPath
}

// BenchmarkLoadCheckpointSD15 loads a full-size SD1.5 checkpoint (mapped, nothing
// converted but the 1-D tensors).
func BenchmarkLoadCheckpointSD15(b *testing.B) {
	path := benchSD15(b)
	rt := ckRuntime(b)
	b.ResetTimer()
	for b.Loop() {
		ck, err := LoadCheckpoint(rt, path, LoadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ck.Close()
	}
}

// BenchmarkLoadCheckpointSD15Cached is the same load through a memory.Manager: every
// load after the first is a cache hit.
func BenchmarkLoadCheckpointSD15Cached(b *testing.B) {
	path := benchSD15(b)
	rt := ckRuntime(b)
	m := memory.New(memory.Options{RAMBudget: -1})
	load := func() {
		h, err := m.LoadFile(context.Background(), path, "checkpoint", func(ctx context.Context, path string) (memory.Loaded, error) {
			ck, err := LoadCheckpoint(rt, path, LoadOptions{})
			if err != nil {
				return memory.Loaded{}, err
			}
			return memory.Loaded{Value: ck, Bytes: ck.Bytes()}, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		h.Release()
	}
	load()
	b.ResetTimer()
	for b.Loop() {
		load()
	}
}

// BenchmarkEncodeTextSD15 encodes one prompt with the full-size CLIP-L.
func BenchmarkEncodeTextSD15(b *testing.B) {
	path := benchSD15(b)
	bpe, err := clip.LoadBPE(testenv.GoldenVocabDir(b))
	if err != nil {
		b.Fatal(err)
	}
	rt := ckRuntime(b)
	ck, err := LoadCheckpoint(rt, path, LoadOptions{Vocab: bpe, SkipModel: true, SkipVAE: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ck.Close()
	b.ResetTimer()
	for b.Loop() {
		enc, err := ck.CLIP.EncodeText(context.Background(), "a photo of a cat sitting on a red sofa, high quality")
		if err != nil {
			b.Fatal(err)
		}
		enc.Release()
	}
}
