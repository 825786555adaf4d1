package gpu

import (
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// MatMul returns a·b for a of shape (…, M, K) and b of shape (…, K, N), F32. The batch
// dims (…) broadcast as in torch.matmul; b may also be 2-d (shared by every batch).
// Inputs whose last two dims are row-major or transposed views are used in place.
func MatMul(rt *Runtime, a, b *Tensor) (*Tensor, error) {
	if a.dtype != F32 || b.dtype != F32 {
		return nil, fmt.Errorf("gpu: matmul %s · %s: operands must be F32 (use Linear for stored weights)", a, b)
	}
	if len(a.shape) < 2 || len(b.shape) < 2 {
		return nil, fmt.Errorf("gpu: matmul %s · %s: operands need 2 or more dims", a, b)
	}
	ra, rb := len(a.shape), len(b.shape)
	m, k := a.shape[ra-2], a.shape[ra-1]
	k2, n := b.shape[rb-2], b.shape[rb-1]
	if k != k2 {
		return nil, fmt.Errorf("gpu: matmul %v · %v: inner dims %d and %d differ", a.shape, b.shape, k, k2)
	}
	var bb [inlineRank]int
	batch, err := broadcastShape(bb[:], a.shape[:ra-2], b.shape[:rb-2])
	if err != nil {
		return nil, fmt.Errorf("gpu: matmul: batch %w", err)
	}
	// Materialise inputs whose batch layout the kernel cannot express with one stride.
	prep := func(t *Tensor) (*Tensor, error) {
		r := len(t.shape)
		if (t.strides[r-1] == 1 || t.strides[r-2] == 1 || t.shape[r-1] <= 1 || t.shape[r-2] <= 1) &&
			batchStride(t, batch) >= 0 {
			return t.view(t.shape, t.strides, t.offset), nil
		}
		e := expandTo(t, batch)
		defer e.Release()
		return Contiguous(rt, e)
	}
	pa, err := prep(a)
	if err != nil {
		return nil, err
	}
	defer pa.Release()
	pb, err := prep(b)
	if err != nil {
		return nil, err
	}
	defer pb.Release()
	out, err := rt.Empty(F32, append(batch, m, n)...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(OpMatMul, rt.call(out, pa, pb)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// expandTo returns a view of t (a new reference) whose batch dims are broadcast to batch
// (stride 0).
func expandTo(t *Tensor, batch []int) *Tensor {
	r := len(t.shape)
	e := t.viewHeader(len(batch)+2, t.offset)
	copy(e.shape, batch)
	copy(e.shape[len(batch):], t.shape[r-2:])
	copy(e.strides[len(batch):], t.strides[r-2:])
	off := len(batch) - (r - 2)
	for i := 0; i < r-2; i++ {
		if t.shape[i] != 1 {
			e.strides[off+i] = t.strides[i]
		}
	}
	return e
}

// batchStride returns the single element stride between consecutive matrices of t over
// the broadcast batch (0 when t is shared by all), or -1 when no single stride works.
func batchStride(t *Tensor, batch []int) int {
	r := len(t.shape)
	off := len(batch) - (r - 2)
	s, prod := -1, 1
	for i := len(batch) - 1; i >= 0; i-- {
		if batch[i] == 1 {
			continue
		}
		st := 0 // t's stride of batch dim i, as expandTo sets it
		if j := i - off; j >= 0 && t.shape[j] != 1 {
			st = t.strides[j]
		}
		if s < 0 {
			s, prod = st, batch[i]
			continue
		}
		if st != s*prod {
			return -1
		}
		prod *= batch[i]
	}
	return max(s, 0)
}

func cpuMatMul(c *CPU, call *Call) error {
	a, b, out := call.In[0], call.In[1], call.Out
	ra, rb := len(a.shape), len(b.shape)
	m, k := a.shape[ra-2], a.shape[ra-1]
	n := b.shape[rb-1]
	batch := out.shape[:len(out.shape)-2]
	count := numel(batch)
	if count == 0 || m == 0 || n == 0 {
		return nil
	}
	sa, sb := batchStride(a, batch), batchStride(b, batch)
	if sa < 0 || sb < 0 {
		return fmt.Errorf("gpu: cpu: matmul batch layout not expressible")
	}
	ta, lda := layout2(a)
	tb, ldb := layout2(b)
	return c.mm.sgemm(false, count, sa, sb, m*n, ta, tb, m, n, k, a.f32(), lda, b.f32(), ldb, out.f32c(), n, false)
}

// layout2 reports whether the last two dims of t are stored transposed, and the leading
// dimension of the stored matrix.
func layout2(t *Tensor) (trans bool, ld int) {
	r := len(t.shape)
	rows, cols := t.shape[r-2], t.shape[r-1]
	sr, sc := t.strides[r-2], t.strides[r-1]
	if sc == 1 || cols <= 1 {
		if rows <= 1 {
			return false, max(cols, 1)
		}
		return false, max(sr, cols, 1)
	}
	// column stride is the leading dimension of the stored (cols × rows) matrix
	return true, max(sc, rows, 1)
}

// Linear returns x·Wᵀ + bias for x of shape (…, K) in F32 and a weight W of shape (N, K)
// in its stored dtype (F32, F16, BF16, F8, or a GGUF block type the GEMM kernels decode);
// bias (N) may be nil. This is torch.nn.Linear.
func Linear(rt *Runtime, x, w, bias *Tensor) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) < 1 {
		return nil, fmt.Errorf("gpu: linear input %s must be F32 with ≥1 dim", x)
	}
	if len(w.shape) != 2 || !w.IsContiguous() {
		return nil, fmt.Errorf("gpu: linear weight %s must be a contiguous (N, K) matrix", w)
	}
	n, k := w.shape[0], w.shape[1]
	if x.shape[len(x.shape)-1] != k {
		return nil, fmt.Errorf("gpu: linear %v · %s%vᵀ: K %d ≠ %d", x.shape, w.dtype, w.shape, x.shape[len(x.shape)-1], k)
	}
	if bias != nil && (bias.dtype != F32 || len(bias.shape) != 1 || bias.shape[0] != n) {
		return nil, fmt.Errorf("gpu: linear bias %s must be F32 [%d]", bias, n)
	}
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	var bc *Tensor
	if bias != nil {
		if bc, err = Contiguous(rt, bias); err != nil {
			return nil, err
		}
		defer bc.Release()
	}
	var sb [inlineRank]int
	shape := append(sb[:0], x.shape...)
	shape[len(shape)-1] = n
	out, err := rt.Empty(F32, shape...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(OpLinear, rt.call(out, xc, w, bc)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

func cpuLinear(c *CPU, call *Call) error {
	x, w, bias, out := call.In[0], call.In[1], call.In[2], call.Out
	n, k := w.shape[0], w.shape[1]
	rows := x.Numel() / max(k, 1)
	if k == 0 {
		rows = numel(x.shape[:len(x.shape)-1])
	}
	y := out.f32c()
	if len(y) == 0 {
		return nil
	}
	acc := false
	if bias != nil {
		bv := bias.f32c()
		for r := 0; r < rows; r++ {
			copy(y[r*n:(r+1)*n], bv)
		}
		acc = true
	}
	var pk *gemm.Packed
	if rows > gemm.DotRows {
		pk = c.packedWeight(w, n, k)
	}
	return c.mm.linear(rows, x.f32c(), max(k, 1), w.dtype, w.deq, w.bytes(), pk, n, k, y, n, acc)
}

// Embedding gathers rows ids of table (V, D), kept in its stored dtype (CLIP's F16 token
// embedding stays F16, a GGUF T5's Q4_0 one stays Q4_0: any dtype Linear takes), into an
// F32 (len(ids), D) tensor: nn.Embedding's forward.
func Embedding(rt *Runtime, table *Tensor, ids []int) (*Tensor, error) {
	if _, ok := gemmDType(table.dtype); len(table.shape) != 2 || !ok || !table.IsContiguous() {
		return nil, fmt.Errorf("gpu: embedding table %s must be a contiguous (V, D) matrix of a weight dtype", table)
	}
	for i, id := range ids {
		if id < 0 || id >= table.shape[0] {
			return nil, fmt.Errorf("gpu: embedding id %d at position %d outside [0, %d)", id, i, table.shape[0])
		}
	}
	out, err := rt.Empty(F32, len(ids), table.shape[1])
	if err != nil {
		return nil, err
	}
	c := rt.call(out, table)
	c.params.embedding = EmbeddingParams{IDs: slices.Clone(ids)}
	c.Params = &c.params.embedding
	if err := rt.exec(OpEmbedding, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

func cpuEmbedding(c *CPU, call *Call) error {
	table, out := call.In[0], call.Out
	ids := call.Params.(*EmbeddingParams).IDs
	d := table.shape[1]
	rowBytes, err := table.dtype.StorageBytes(d)
	if err != nil {
		return err
	}
	src, o := table.bytes(), out.f32c()
	gd, _ := gemmWeightDType(table.dtype, table.deq)
	for i, id := range ids {
		row, dst := src[id*rowBytes:(id+1)*rowBytes], o[i*d:(i+1)*d]
		var err error
		if table.dtype.IsFloat() {
			err = DecodeFloat32(table.dtype, dst, row)
		} else {
			err = gemm.DecodeRow(gd, dst, row)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
