package t5

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu"
)

// relativeBucket maps the distance key − query to one of numBuckets buckets, as
// T5Attention._relative_position_bucket does with bidirectional=True: half of the
// buckets for keys after the query, half for keys before; in each half, distances below
// a quarter of the buckets get one bucket each and longer ones share logarithmically
// wider buckets up to maxDistance, beyond which all fall into the last bucket.
//
// The logarithmic part is computed in float32 as PyTorch does (the distance as float32
// divided by max_exact, torch.log, divided by log(max_distance/max_exact) rounded to
// float32, times the remaining bucket count, truncated), so that distances whose exact
// result is a whole number (16, 32, 64 with 32 buckets) land where PyTorch puts them.
func relativeBucket(rel, numBuckets, maxDistance int) int {
	nb := numBuckets / 2
	bucket := 0
	if rel > 0 {
		bucket = nb
	}
	n := rel
	if n < 0 {
		n = -n
	}
	maxExact := nb / 2
	if n < maxExact {
		return bucket + n
	}
	ratio := float32(n) / float32(maxExact)
	lg := float32(math.Log(float64(ratio)))
	den := float32(math.Log(float64(maxDistance) / float64(maxExact)))
	large := maxExact + int(lg/den*float32(nb-maxExact))
	return bucket + min(large, nb-1)
}

// attentionBias builds the additive attention mask of one block: the relative position
// bias table (num_buckets, heads) spread over (query, key) pairs, plus −max_float on the
// keys a mask row hides (T5Stack.forward adds the two). The result is (1, H, T, T) without
// a mask and (B, H, T, T) with one.
func (m *Model) attentionBias(table *gpu.Tensor, n int, mask [][]int) (*gpu.Tensor, error) {
	tv, err := table.Float32()
	if err != nil {
		return nil, fmt.Errorf("t5: relative_attention_bias: %w", err)
	}
	h := m.Heads
	// One bias row per relative distance −(n−1) … n−1, per head.
	rel := make([]float32, h*(2*n-1))
	for d := -(n - 1); d <= n-1; d++ {
		bk := relativeBucket(d, m.NumBuckets, m.MaxDistance)
		for hi := 0; hi < h; hi++ {
			rel[hi*(2*n-1)+d+n-1] = tv[bk*h+hi]
		}
	}
	batch := 1
	if mask != nil {
		batch = len(mask)
	}
	out := make([]float32, batch*h*n*n)
	for bi := 0; bi < batch; bi++ {
		for hi := 0; hi < h; hi++ {
			row := rel[hi*(2*n-1):]
			for i := 0; i < n; i++ {
				dst := out[((bi*h+hi)*n+i)*n:][:n]
				// key j sits at distance j−i: row index j−i+n−1
				copy(dst, row[n-1-i:2*n-1-i])
				if mask != nil {
					for j, keep := range mask[bi] {
						if keep == 0 {
							dst[j] += -math.MaxFloat32
						}
					}
				}
			}
		}
	}
	return m.rt.FromFloat32(out, batch, h, n, n)
}
