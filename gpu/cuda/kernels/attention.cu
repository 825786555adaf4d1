// Flash attention (gpu.OpAttention): each block takes AQ queries of one (batch, head) and
// walks the keys in tiles of AK held in shared memory, keeping a running max and sum per
// query (online softmax), so memory is linear in the number of tokens. Four threads
// share a query, each holding every fourth of its D (≤ ADMAX) dims of q and of the
// output accumulator in registers; the four partial dot products are summed with warp
// shuffles. One instance per head-width class (64: SD1.5's 40 and SDXL's 64; 80; 128:
// Flux; 160: SD1.5's deepest level) keeps the register arrays no wider than needed.

#define AQ 32
#define AK 32
#define ATPQ 4

#define ATTN_PARAMS const float* q, const float* k, const float* v, const float* mask, float* out, \
	int H, int Lq, int Lk, int D, int Dv, \
	i64 qsb, i64 qsh, i64 qsl, i64 ksb, i64 ksh, i64 ksl, i64 vsb, i64 vsh, i64 vsl, \
	i64 msb, i64 msh, i64 msq, i64 msk, float scale, int causal
#define ATTN_ARGS q, k, v, mask, out, H, Lq, Lk, D, Dv, qsb, qsh, qsl, ksb, ksh, ksl, vsb, vsh, vsl, \
	msb, msh, msq, msk, scale, causal

template <int ADMAX>
__device__ __forceinline__ void attention(ATTN_PARAMS) {
	const int ADR = ADMAX / ATPQ;
	__shared__ float Ks[AK][ADMAX];
	__shared__ float Vs[AK][ADMAX];
	int tid = threadIdx.x, part = tid & (ATPQ - 1);
	int bh = blockIdx.y, bi = bh / H, hi = bh % H;
	int q0 = blockIdx.x * AQ, qi = q0 + tid / ATPQ;
	bool valid = qi < Lq;
	const float* qrow = q + bi * qsb + hi * qsh + (i64)qi * qsl;
	const float* kb = k + bi * ksb + hi * ksh;
	const float* vb = v + bi * vsb + hi * vsh;
	const float* mrow = mask ? mask + bi * msb + hi * msh + (i64)qi * msq : 0;
	float qr[ADR], o[ADR];
#pragma unroll
	for (int t = 0; t < ADR; ++t) {
		int d = part + ATPQ * t;
		qr[t] = (valid && d < D) ? qrow[d] : 0.0f;
		o[t] = 0.0f;
	}
	float m = -FF_INF, l = 0.0f;
	int qlast = min(q0 + AQ, Lq) - 1;
	for (int k0 = 0; k0 < Lk; k0 += AK) {
		if (causal && k0 > qlast) break; // every later key is masked for this block
		for (int e = tid; e < AK * D; e += AQ * ATPQ) {
			int j = e / D, d = e - j * D;
			Ks[j][d] = (k0 + j < Lk) ? kb[(i64)(k0 + j) * ksl + d] : 0.0f;
		}
		for (int e = tid; e < AK * Dv; e += AQ * ATPQ) {
			int j = e / Dv, d = e - j * Dv;
			Vs[j][d] = (k0 + j < Lk) ? vb[(i64)(k0 + j) * vsl + d] : 0.0f;
		}
		__syncthreads();
		float s[AK];
		float mt = -FF_INF;
#pragma unroll
		for (int j = 0; j < AK; ++j) {
			float acc = 0.0f;
#pragma unroll
			for (int t = 0; t < ADR; ++t) {
				int d = part + ATPQ * t;
				if (d < D) acc = fmaf(qr[t], Ks[j][d], acc);
			}
			acc += __shfl_xor_sync(0xffffffffu, acc, 1);
			acc += __shfl_xor_sync(0xffffffffu, acc, 2);
			int key = k0 + j;
			float sc = acc * scale;
			if (key >= Lk || (causal && key > qi)) {
				sc = -FF_INF;
			} else if (mrow && valid) {
				sc += mrow[(i64)key * msk];
			}
			s[j] = sc;
			mt = fmaxf(mt, sc);
		}
		float mn = fmaxf(m, mt);
		if (mn != -FF_INF) {
			float corr = expf(m - mn); // 0 when m is still −Inf
			l *= corr;
#pragma unroll
			for (int t = 0; t < ADR; ++t) o[t] *= corr;
#pragma unroll
			for (int j = 0; j < AK; ++j) {
				float p = expf(s[j] - mn);
				l += p;
#pragma unroll
				for (int t = 0; t < ADR; ++t) {
					int d = part + ATPQ * t;
					if (d < Dv) o[t] = fmaf(p, Vs[j][d], o[t]);
				}
			}
			m = mn;
		}
		__syncthreads();
	}
	if (!valid) return;
	float* orow = out + ((i64)bh * Lq + qi) * Dv;
	float inv = 1.0f / l; // a fully masked row has l = 0: NaN, as PyTorch
#pragma unroll
	for (int t = 0; t < ADR; ++t) {
		int d = part + ATPQ * t;
		if (d < Dv) orow[d] = l > 0.0f ? o[t] * inv : FF_NAN;
	}
}

extern "C" __global__ void __launch_bounds__(AQ * ATPQ) ff_attention_64(ATTN_PARAMS) { attention<64>(ATTN_ARGS); }
extern "C" __global__ void __launch_bounds__(AQ * ATPQ) ff_attention_80(ATTN_PARAMS) { attention<80>(ATTN_ARGS); }
extern "C" __global__ void __launch_bounds__(AQ * ATPQ) ff_attention_128(ATTN_PARAMS) { attention<128>(ATTN_ARGS); }
extern "C" __global__ void __launch_bounds__(AQ * ATPQ) ff_attention_160(ATTN_PARAMS) { attention<160>(ATTN_ARGS); }
