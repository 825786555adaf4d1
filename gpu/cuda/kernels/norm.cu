// Norms and softmax: statistics in double (as the cpu backend's moments), the result in
// float. One block per normalised group or row.

extern "C" __global__ void ff_group_norm(float* out, const float* x, const float* w, const float* b,
                                         int C, int G, i64 spatial, double eps) {
	__shared__ double sh[32];
	int bi = blockIdx.x / G, g = blockIdx.x % G, cpg = C / G;
	i64 base = ((i64)bi * C + (i64)g * cpg) * spatial, cnt = (i64)cpg * spatial;
	double s = 0, q = 0;
	for (i64 i = threadIdx.x; i < cnt; i += blockDim.x) {
		double v = x[base + i];
		s += v;
		q += v * v;
	}
	s = block_sum_d(s, sh);
	q = block_sum_d(q, sh);
	double n = (double)(cnt > 0 ? cnt : 1);
	double mean = s / n, var = fmax(q / n - mean * mean, 0.0);
	double inv = 1.0 / sqrt(var + eps);
	for (i64 i = threadIdx.x; i < cnt; i += blockDim.x) {
		int ch = g * cpg + (int)(i / spatial);
		double scale = inv, shift = -mean * inv;
		if (w) {
			scale *= (double)w[ch];
			shift *= (double)w[ch];
		}
		if (b) shift += (double)b[ch];
		out[base + i] = __fadd_rn(__fmul_rn(x[base + i], (float)scale), (float)shift);
	}
}

extern "C" __global__ void ff_layer_norm(float* out, const float* x, const float* w, const float* b, i64 d, double eps) {
	__shared__ double sh[32];
	i64 base = (i64)blockIdx.x * d;
	double s = 0, q = 0;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		double v = x[base + i];
		s += v;
		q += v * v;
	}
	s = block_sum_d(s, sh);
	q = block_sum_d(q, sh);
	double n = (double)(d > 0 ? d : 1);
	double mean = s / n, var = fmax(q / n - mean * mean, 0.0);
	float m = (float)mean, inv = (float)(1.0 / sqrt(var + eps));
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		float v = __fmul_rn(x[base + i] - m, inv);
		if (w) v = __fmul_rn(v, w[i]);
		if (b) v = v + b[i];
		out[base + i] = v;
	}
}

extern "C" __global__ void ff_rms_norm(float* out, const float* x, const float* w, i64 d, double eps) {
	__shared__ double sh[32];
	i64 base = (i64)blockIdx.x * d;
	double q = 0;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		double v = x[base + i];
		q += v * v;
	}
	q = block_sum_d(q, sh);
	float s = (float)(1.0 / sqrt(q / (double)(d > 0 ? d : 1) + eps));
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		float v = __fmul_rn(x[base + i], s);
		if (w) v = __fmul_rn(v, w[i]);
		out[base + i] = v;
	}
}

// A row whose max is −Inf (fully masked) or NaN becomes NaN, as in PyTorch.
extern "C" __global__ void ff_softmax(float* out, const float* x, i64 d) {
	__shared__ float sh[32];
	i64 base = (i64)blockIdx.x * d;
	float m = -FF_INF;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) m = nanmax(m, x[base + i]);
	m = block_max_f(m, sh);
	if (m != m || m == -FF_INF) {
		for (i64 i = threadIdx.x; i < d; i += blockDim.x) out[base + i] = FF_NAN;
		return;
	}
	float s = 0;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
		float e = expf(x[base + i] - m);
		out[base + i] = e;
		s += e;
	}
	s = block_sum_f(s, sh);
	float inv = 1.0f / s;
	for (i64 i = threadIdx.x; i < d; i += blockDim.x) out[base + i] *= inv;
}
