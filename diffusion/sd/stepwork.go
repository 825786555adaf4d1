package sd

import "github.com/forgeflow/forgeflow/gpu"

// stepWork is what a run's steps reuse instead of allocating: the per-list predictions
// and weights of calc_cond_batch, the active entries and their batching lists, the
// network's input data and its input tensors. Everything is made at the first step (and
// again only when a size changes), so that a steady-state step of the plain CFG path puts
// nothing on the Go heap. It belongs to one denoiser, whose steps run one at a time;
// calcCondBatch may run several times per step (model patches do), one after the other.
type stepWork struct {
	// lists and outs are the plain guidance's [cond, uncond] lists and their predictions.
	lists [][]modelCond
	outs  [][]float32
	// counts are calcCondBatch's Σ mult per list (scratch of one call).
	counts [][]float32
	// entries back the active entries of one calcCondBatch call; toRun, rest, pick and
	// batch are its batching lists.
	entries            []activeEntry
	toRun, rest, batch []*activeEntry
	pick               []int
	// scaled and masked are the inpainting blend's inputs.
	scaled, masked []float32
	// input, xin, ctxData, yData, ts and den are one network call's host data.
	input, xin, ctxData, yData, ts, den []float32
	// x, timesteps, context and y are the network inputs kept from call to call.
	x, timesteps, context, y keptInput
}

// grow returns buf with length n, reusing its storage when it is large enough. The
// contents are not cleared.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// listBufs returns bufs with n slices of size values each, reusing what it holds.
func listBufs(bufs [][]float32, n, size int) [][]float32 {
	for len(bufs) < n {
		bufs = append(bufs, nil)
	}
	bufs = bufs[:n]
	for i := range bufs {
		bufs[i] = grow(bufs[i], size)
	}
	return bufs
}

// release frees the kept tensors.
func (w *stepWork) release() {
	w.x.release()
	w.timesteps.release()
	w.context.release()
	w.y.release()
}

// keptInput is a network input tensor kept from one call to the next: on a host-memory
// backend its storage is rewritten in place while the shape stays the same (the networks
// do not keep their inputs past a call); otherwise a new tensor replaces it.
type keptInput struct {
	t     *gpu.Tensor
	shape [4]int
	rank  int
}

// set returns a tensor of shape[:rank] holding data.
func (k *keptInput) set(rt *gpu.Runtime, data []float32, shape [4]int, rank int) (*gpu.Tensor, error) {
	if k.t != nil && k.shape == shape && k.rank == rank {
		if host, ok := k.t.HostFloat32(); ok {
			copy(host, data)
			return k.t, nil
		}
	}
	k.release()
	k.shape, k.rank = shape, rank
	t, err := rt.FromFloat32(data, k.shape[:rank]...)
	if err != nil {
		return nil, err
	}
	k.t = t
	return t, nil
}

func (k *keptInput) release() {
	if k.t != nil {
		k.t.Release()
		k.t = nil
	}
}
