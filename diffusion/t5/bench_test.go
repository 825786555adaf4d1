package t5

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
)

// xxl is T5-XXL's encoder (t5_config_xxl.json): 4.76 B parameters.
var xxl = synthSize{DModel: 4096, DKV: 64, Heads: 64, DFF: 10240, Layers: 24, Vocab: 32128, Buckets: 32}

// rawTensor is one stored tensor of an in-memory model.
type rawTensor struct {
	dtype gpu.DType
	shape []int
	data  []byte
}

// rawSource serves stored tensors from memory (a model built in the benchmark, laid out
// under llama.cpp's names as a GGUF file would hold it).
type rawSource struct {
	rt   *gpu.Runtime
	keys []string
	m    map[string]rawTensor
}

func (s *rawSource) Keys() []string { return s.keys }

func (s *rawSource) Tensor(key string) (*gpu.Tensor, error) {
	t, ok := s.m[key]
	if !ok {
		return nil, fmt.Errorf("no tensor %s", key)
	}
	return s.rt.FromBytes(t.dtype, t.data, t.shape...)
}

// randomStored fills n elements of dtype d with random values of about std: Q4_0 and
// Q8_0 blocks get a random scale and random quants (drawn directly, not quantized from
// floats, so that a full-size model builds in seconds), F16/BF16/F32 normal values.
func randomStored(r *rand.Rand, d gpu.DType, n int, std float64) []byte {
	size, err := d.StorageBytes(n)
	if err != nil {
		panic(err)
	}
	b := make([]byte, size)
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	half := func(f float64) uint16 { return dtype.F32ToF16(float32(f)) }
	switch d {
	case gpu.Q4_0: // d·(q−8), q uniform in 0…15: std ≈ 4.6·d
		for i := 0; i < len(b); i += 18 {
			binary.LittleEndian.PutUint16(b[i:], half(std/4.6*(0.8+0.4*r.Float64())))
		}
	case gpu.Q8_0: // d·q, q uniform in −128…127: std ≈ 74·d
		for i := 0; i < len(b); i += 34 {
			binary.LittleEndian.PutUint16(b[i:], half(std/74*(0.8+0.4*r.Float64())))
		}
	default:
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(r.NormFloat64() * std)
		}
		if err := gpu.EncodeFloat32(d, b, vals); err != nil {
			panic(err)
		}
	}
	return b
}

// randomModel builds an encoder of size s in memory under llama.cpp's names: matrices
// in mat, the bias table F16 and the norms F32 (as llama-quantize leaves them).
func randomModel(rt *gpu.Runtime, s synthSize, mat gpu.DType) (*rawSource, int64) {
	r := rand.New(rand.NewPCG(42, 7))
	src := &rawSource{rt: rt, m: map[string]rawTensor{}}
	var bytes int64
	add := func(key string, d gpu.DType, std float64, shape ...int) {
		n := 1
		for _, v := range shape {
			n *= v
		}
		var data []byte
		if len(shape) == 1 {
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(0.5 + r.Float64())
			}
			data = make([]byte, 4*n)
			if err := gpu.EncodeFloat32(gpu.F32, data, vals); err != nil {
				panic(err)
			}
		} else {
			data = randomStored(r, d, n, std)
		}
		src.keys = append(src.keys, key)
		src.m[key] = rawTensor{d, shape, data}
		bytes += int64(len(data))
	}
	d, inner := float64(s.DModel), s.Heads*s.DKV
	add("token_embd.weight", mat, 1, s.Vocab, s.DModel)
	for i := 0; i < s.Layers; i++ {
		p := "enc.blk." + strconv.Itoa(i) + "."
		add(p+"attn_norm.weight", gpu.F32, 0, s.DModel)
		add(p+"attn_q.weight", mat, 1/math.Sqrt(d*float64(s.DKV)), inner, s.DModel)
		add(p+"attn_k.weight", mat, 1/math.Sqrt(d), inner, s.DModel)
		add(p+"attn_v.weight", mat, 1/math.Sqrt(d), inner, s.DModel)
		add(p+"attn_o.weight", mat, 1/math.Sqrt(float64(inner)), s.DModel, inner)
		if i == 0 {
			add(p+"attn_rel_b.weight", gpu.F16, 1/math.Sqrt(d), s.Buckets, s.Heads)
		}
		add(p+"ffn_norm.weight", gpu.F32, 0, s.DModel)
		add(p+"ffn_gate.weight", mat, 1/math.Sqrt(d), s.DFF, s.DModel)
		add(p+"ffn_up.weight", mat, 1/math.Sqrt(d), s.DFF, s.DModel)
		add(p+"ffn_down.weight", mat, 1/math.Sqrt(float64(s.DFF)), s.DModel, s.DFF)
	}
	add("enc.output_norm.weight", gpu.F32, 0, s.DModel)
	return src, bytes
}

// peakRSS is the process's peak resident set (VmHWM), in bytes; 0 where /proc is absent.
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// encodeFLOPs counts the multiply-adds (×2) of one encode of n tokens: the seven
// projections per block and the two attention products.
func encodeFLOPs(s synthSize, n int) float64 {
	inner := float64(s.Heads * s.DKV)
	d, ff := float64(s.DModel), float64(s.DFF)
	perToken := 4*d*inner + 3*d*ff
	attn := 2 * float64(n) * inner // q·kᵀ and p·v per query
	return 2 * float64(s.Layers) * float64(n) * (perToken + attn)
}

// BenchmarkEncode encodes a 256-token prompt (a Flux T5 input: prompt, </s>, padding)
// with a full-size random T5-XXL built in memory, its matrices and embedding stored as
// Q4_0 (the GGUF T5 people run) and never dequantized whole; and, for the per-block
// speed of 16-bit weights without a 9.5 GB model, its first 4 blocks in BF16. It reports
// tokens/s, GFLOP/s, the stored weight size and the process's peak RSS.
//
//	go test ./diffusion/t5 -run '^$' -bench Encode -benchtime 1x
func BenchmarkEncode(b *testing.B) {
	cases := []struct {
		name   string
		size   synthSize
		stored gpu.DType
	}{
		{"q4_0/xxl/256tok", xxl, gpu.Q4_0},
		{"bf16/xxl-4blocks/256tok", func() synthSize { s := xxl; s.Layers = 4; return s }(), gpu.BF16},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			rt, err := gpu.New(gpu.Options{})
			if err != nil {
				b.Fatal(err)
			}
			src, weightBytes := randomModel(rt, c.size, c.stored)
			m, _, err := Load(rt, src, "")
			if err != nil {
				b.Fatal(err)
			}
			defer m.Release()
			if m.Blocks[0].Attn.Q.Weight.DType() != c.stored || m.Shared.DType() != c.stored {
				b.Fatalf("weights converted at load: %s", m.Blocks[0].Attn.Q.Weight.DType())
			}
			const n = 256
			ids := make([]int, n)
			for i := range ids {
				ids[i] = 3 + (i*7919)%32000
			}
			ids[40] = EndID
			for i := 41; i < n; i++ {
				ids[i] = PadID
			}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				out, err := m.Encode(ctx, [][]int{ids}, nil)
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(n/sec, "tokens/s")
			b.ReportMetric(encodeFLOPs(c.size, n)/sec/1e9, "GFLOP/s")
			b.ReportMetric(float64(weightBytes)/(1<<20), "weights_MB")
			b.ReportMetric(peakRSS()/(1<<20), "peak_rss_MB")
		})
	}
}
