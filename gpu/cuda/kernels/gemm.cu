// Matrix products: batched F32 MatMul, Linear with the weight in its stored dtype
// (plain floats or GGUF blocks decoded per tile while it is loaded: no dequantised copy
// of a weight is ever made), and Conv2D as an implicit GEMM (the im2col matrix is
// gathered tile by tile, never stored). One tiled kernel body, three loaders; F32
// accumulation throughout.

#define BM 64
#define BN 64
#define BK 16

// A tile loader maps a thread's element e (0..1023 of a BM×BK or BN×BK tile) to
// (row, k) so that neighbouring threads read neighbouring addresses, and loads it.
struct StridedA { // A(i, p) = base[i·rs + p·cs]
	const float* base;
	i64 rs, cs;
	__device__ void index(int e, int* i, int* p) const {
		if (cs == 1) { *i = e / BK; *p = e % BK; } else { *i = e % BM; *p = e / BM; }
	}
	__device__ float operator()(int i, int p) const { return base[(i64)i * rs + (i64)p * cs]; }
};

struct StridedB { // B(p, j) = base[p·rs + j·cs]
	const float* base;
	i64 rs, cs;
	__device__ void index(int e, int* j, int* p) const {
		if (rs == 1) { *j = e / BK; *p = e % BK; } else { *j = e % BN; *p = e / BN; }
	}
	__device__ float operator()(int p, int j) const { return base[(i64)p * rs + (i64)j * cs]; }
};

struct WeightRowsT { // B(p, j) = W[j][p], W rows of rowBytes bytes in dtype dt
	const u8* w;
	i64 rowBytes;
	int dt;
	__device__ void index(int e, int* j, int* p) const { *j = e / BK; *p = e % BK; }
	__device__ float operator()(int p, int j) const { return load_weight(w + (i64)j * rowBytes, p, dt); }
};

struct WeightRows { // A(i, p) = W[i][p], plain float dtype, K per row
	const u8* w;
	i64 K;
	int dt;
	__device__ void index(int e, int* i, int* p) const { *i = e / BK; *p = e % BK; }
	__device__ float operator()(int i, int p) const { return load_plain(w, (i64)i * K + p, dt); }
};

struct ConvGather { // B(p, j): p = (ci, ky, kx), j = (n, oy, ox); zero outside the image
	const float* x;
	int cin, h, w, kh, kw, stride, padT, padL, oh, ow;
	__device__ void index(int e, int* j, int* p) const { *j = e % BN; *p = e / BN; }
	__device__ float operator()(int p, int j) const {
		int kx = p % kw, t = p / kw, ky = t % kh, ci = t / kh;
		int ox = j % ow, t2 = j / ow, oy = t2 % oh, n = t2 / oh;
		int iy = oy * stride - padT + ky, ix = ox * stride - padL + kx;
		if (iy < 0 || iy >= h || ix < 0 || ix >= w) return 0.0f;
		return x[(((i64)n * cin + ci) * h + iy) * w + ix];
	}
};

template <class LA, class LB, class ST>
__device__ __forceinline__ void gemm_tile(const LA& la, const LB& lb, const ST& st, int M, int N, int K) {
	__shared__ float As[BK][BM + 1];
	__shared__ float Bs[BK][BN + 1];
	int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
	int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
	float acc[4][4];
	for (int r = 0; r < 4; ++r)
		for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
	for (int k0 = 0; k0 < K; k0 += BK) {
		for (int r = 0; r < 4; ++r) {
			int i, p;
			la.index(tid + r * 256, &i, &p);
			int gi = m0 + i, gp = k0 + p;
			As[p][i] = (gi < M && gp < K) ? la(gi, gp) : 0.0f;
		}
		for (int r = 0; r < 4; ++r) {
			int j, p;
			lb.index(tid + r * 256, &j, &p);
			int gj = n0 + j, gp = k0 + p;
			Bs[p][j] = (gj < N && gp < K) ? lb(gp, gj) : 0.0f;
		}
		__syncthreads();
#pragma unroll
		for (int p = 0; p < BK; ++p) {
			float a[4], b[4];
			for (int r = 0; r < 4; ++r) a[r] = As[p][ty + 16 * r];
			for (int c = 0; c < 4; ++c) b[c] = Bs[p][tx + 16 * c];
			for (int r = 0; r < 4; ++r)
				for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
		}
		__syncthreads();
	}
	for (int r = 0; r < 4; ++r)
		for (int c = 0; c < 4; ++c) {
			int i = m0 + ty + 16 * r, j = n0 + tx + 16 * c;
			if (i < M && j < N) st(i, j, acc[r][c]);
		}
}

struct StoreC {
	float* c;
	i64 ldc;
	__device__ void operator()(int i, int j, float v) const { c[(i64)i * ldc + j] = v; }
};

// C[z] = A[z]·B[z] for z = blockIdx.z; A(i, p) at a + z·sa + i·ars + p·acs, B likewise.
extern "C" __global__ void __launch_bounds__(256) ff_matmul(const float* a, const float* b, float* c, int M, int N, int K,
                                                            i64 ars, i64 acs, i64 sa, i64 brs, i64 bcs, i64 sb, i64 sc) {
	i64 z = blockIdx.z;
	StridedA la = {a + z * sa, ars, acs};
	StridedB lb = {b + z * sb, brs, bcs};
	StoreC st = {c + z * sc, N};
	gemm_tile(la, lb, st, M, N, K);
}

struct StoreLinear {
	float* y;
	const float* bias;
	int n;
	__device__ void operator()(int i, int j, float v) const { y[(i64)i * n + j] = bias ? v + bias[j] : v; }
};

// y (rows×N) = x (rows×K)·Wᵀ + bias, W (N×K) in dtype dt, rows of rowBytes bytes.
extern "C" __global__ void __launch_bounds__(256) ff_linear(const float* x, const u8* w, const float* bias, float* y,
                                                            int rows, int N, int K, i64 rowBytes, int dt) {
	StridedA la = {x, K, 1};
	WeightRowsT lb = {w, rowBytes, dt};
	StoreLinear st = {y, bias, N};
	gemm_tile(la, lb, st, rows, N, K);
}

struct StoreConv {
	float* out;
	const float* bias;
	int cout, ohw;
	__device__ void operator()(int co, int j, float v) const {
		int n = j / ohw, pix = j - n * ohw;
		out[((i64)n * cout + co) * ohw + pix] = bias ? v + bias[co] : v;
	}
};

// out (N, Cout, OH, OW) = W (Cout × Cin·kh·kw, plain float dtype dt) · im2col(x) + bias.
extern "C" __global__ void __launch_bounds__(256) ff_conv2d(const float* x, const u8* w, const float* bias, float* out,
                                                            int nimg, int cin, int h, int wd, int cout, int kh, int kw,
                                                            int stride, int padT, int padL, int oh, int ow, int dt) {
	int K = cin * kh * kw;
	WeightRows la = {w, K, dt};
	ConvGather lb = {x, cin, h, wd, kh, kw, stride, padT, padL, oh, ow};
	StoreConv st = {out, bias, cout, oh * ow};
	gemm_tile(la, lb, st, cout, nimg * oh * ow, K);
}
