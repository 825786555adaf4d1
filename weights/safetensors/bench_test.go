package safetensors

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/weights"
)

// benchSizeMB is the size of the file BenchmarkOpenFirstTensor writes:
// $FORGEFLOW_BENCH_SAFETENSORS_MB, 64 by default (CI keeps it small; use 2048 for the
// 2 GB checkpoint figure in codex/weights.md).
func benchSizeMB(b *testing.B) int {
	if v := os.Getenv("FORGEFLOW_BENCH_SAFETENSORS_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("FORGEFLOW_BENCH_SAFETENSORS_MB=%q: want a positive integer", v)
		}
		return n
	}
	return 64
}

// writeBenchFile writes sizeMB of F16 tensors of 4 MiB each (2048x1024), streamed.
func writeBenchFile(b *testing.B, sizeMB int) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.safetensors")
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 4<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	var entries []Entry
	for i := 0; i < (sizeMB+3)/4; i++ {
		entries = append(entries, Entry{
			Name: fmt.Sprintf("model.diffusion_model.input_blocks.%d.0.weight", i), DType: weights.F16,
			Shape: []int64{2048, 1024}, WriteData: func(w io.Writer) error { _, err := w.Write(chunk); return err },
		})
	}
	if err := Write(out, entries, map[string]string{"format": "pt"}); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkOpenFirstTensor measures opening a large file and getting its first tensor's
// bytes (every page touched), for the mapped reader and for the read-whole-file fallback.
// The file is in the page cache after the first iteration: this is the warm figure.
func BenchmarkOpenFirstTensor(b *testing.B) {
	size := benchSizeMB(b)
	path := writeBenchFile(b, size)
	for _, mode := range []string{"mmap", "read"} {
		b.Run(fmt.Sprintf("%s/%dMB", mode, size), func(b *testing.B) {
			for b.Loop() {
				f, err := openWith(path, mode == "mmap")
				if err != nil {
					b.Fatal(err)
				}
				t, err := f.Tensor(f.Tensors()[0].Name)
				if err != nil {
					b.Fatal(err)
				}
				var sum byte
				for i := 0; i < len(t.Data); i += 4096 {
					sum += t.Data[i]
				}
				_ = sum
				f.Close()
			}
		})
	}
}

// BenchmarkReadHeader measures the header-only read of the same file.
func BenchmarkReadHeader(b *testing.B) {
	size := benchSizeMB(b)
	path := writeBenchFile(b, size)
	b.Run(fmt.Sprintf("%dMB", size), func(b *testing.B) {
		for b.Loop() {
			if _, err := ReadHeader(path); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParseHeader measures header decoding alone for an SDXL-sized tensor count.
func BenchmarkParseHeader(b *testing.B) {
	var entries []Entry
	for i := 0; i < 2500; i++ {
		entries = append(entries, Entry{Name: fmt.Sprintf("model.diffusion_model.output_blocks.%d.1.transformer_blocks.%d.attn1.to_q.weight", i/100, i%100),
			DType: weights.F16, Shape: []int64{640, 640}, WriteData: func(w io.Writer) error { return nil }})
	}
	var hdr []byte
	sizes := make([]int64, len(entries))
	for i := range sizes {
		sizes[i] = 640 * 640 * 2
	}
	hdr, err := encodeHeader(entries, sizes, map[string]string{"format": "pt"})
	if err != nil {
		b.Fatal(err)
	}
	fileSize := 8 + int64(len(hdr)) + 2500*640*640*2
	b.Run("2500tensors", func(b *testing.B) {
		b.SetBytes(int64(len(hdr)))
		for b.Loop() {
			if _, err := parseHeader("bench", hdr, fileSize); err != nil {
				b.Fatal(err)
			}
		}
	})
}
