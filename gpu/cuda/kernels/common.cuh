// forgeflow CUDA kernels: shared definitions, prepended to every kernel file.
// Compiled by NVRTC at run time without any header: the narrow float formats are
// converted with integer code that mirrors gpu/convert.go bit for bit.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define FF_INF __int_as_float(0x7f800000)
#define FF_NAN __int_as_float(0x7fc00000)

// A strided view: element lin (row-major over shape) is at offset + Σ idx[i]·stride[i].
// The Go side merges dims that are contiguous with each other, so rank is small.
#define FF_MAXR 8
struct Desc {
	i64 rank;
	i64 offset;
	i64 shape[FF_MAXR];
	i64 stride[FF_MAXR];
};

__device__ __forceinline__ i64 desc_offset(const Desc& d, i64 lin) {
	i64 off = d.offset;
	for (int i = (int)d.rank - 1; i > 0; --i) {
		i64 s = d.shape[i];
		i64 q = lin / s;
		off += (lin - q * s) * d.stride[i];
		lin = q;
	}
	if (d.rank > 0) off += lin * d.stride[0];
	return off;
}

// dtype codes shared with dtypes.go
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_E4M3 3
#define DT_E5M2 4
#define DT_Q4_0 10
#define DT_Q4_1 11
#define DT_Q5_0 12
#define DT_Q5_1 13
#define DT_Q8_0 14
#define DT_Q2_K 15
#define DT_Q3_K 16
#define DT_Q4_K 17
#define DT_Q5_K 18
#define DT_Q6_K 19

__device__ __forceinline__ float f16_to_f32(u32 h) {
	u32 sign = (h & 0x8000u) << 16;
	u32 e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
	if (e == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (m << 13));
	if (e != 0) return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
	float v = (float)m * 5.9604644775390625e-8f; // m·2⁻²⁴, exact
	return sign ? -v : v;
}

__device__ __forceinline__ float bf16_to_f32(u32 b) { return __uint_as_float(b << 16); }

__device__ __forceinline__ float e4m3_to_f32(u32 b) {
	u32 mag = b & 0x7fu;
	float s = (b & 0x80u) ? -1.0f : 1.0f;
	if (mag == 0x7fu) return FF_NAN;
	u32 e = mag >> 3, m = mag & 7u;
	if (e == 0) return s * (float)m * 0.001953125f; // m·2⁻⁹
	return s * __uint_as_float(((e + 120u) << 23) | (m << 20));
}

// e5m2 is the top byte of an IEEE half.
__device__ __forceinline__ float e5m2_to_f32(u32 b) { return f16_to_f32(b << 8); }

__device__ __forceinline__ u16 ld16(const u8* p) { return (u16)(p[0] | (p[1] << 8)); }
__device__ __forceinline__ u32 ld32(const u8* p) {
	return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// load_plain reads element i of a plain float array of dtype dt.
__device__ __forceinline__ float load_plain(const u8* base, i64 i, int dt) {
	switch (dt) {
	case DT_F32: return ((const float*)base)[i];
	case DT_F16: return f16_to_f32(((const u16*)base)[i]);
	case DT_BF16: return bf16_to_f32(((const u16*)base)[i]);
	case DT_E4M3: return e4m3_to_f32(base[i]);
	default: return e5m2_to_f32(base[i]);
	}
}

// ---- GGUF blocks: element e of one block (layouts as weights/gguf/dequant*.go) ----

__device__ __forceinline__ float q4_0_elem(const u8* b, int e) {
	float d = f16_to_f32(ld16(b));
	u32 q = b[2 + (e & 15)];
	int n = e < 16 ? (int)(q & 15u) : (int)(q >> 4);
	return (float)(n - 8) * d;
}
__device__ __forceinline__ float q4_1_elem(const u8* b, int e) {
	float d = f16_to_f32(ld16(b)), m = f16_to_f32(ld16(b + 2));
	u32 q = b[4 + (e & 15)];
	u32 n = e < 16 ? (q & 15u) : (q >> 4);
	return __fadd_rn(__fmul_rn((float)n, d), m);
}
__device__ __forceinline__ u32 q5_high(u32 qh, int e) {
	int j = e & 15;
	return e < 16 ? ((qh >> j) << 4) & 0x10u : (qh >> (j + 12)) & 0x10u;
}
__device__ __forceinline__ float q5_0_elem(const u8* b, int e) {
	float d = f16_to_f32(ld16(b));
	u32 qh = ld32(b + 2), q = b[6 + (e & 15)];
	u32 n = (e < 16 ? (q & 15u) : (q >> 4)) | q5_high(qh, e);
	return (float)((int)n - 16) * d;
}
__device__ __forceinline__ float q5_1_elem(const u8* b, int e) {
	float d = f16_to_f32(ld16(b)), m = f16_to_f32(ld16(b + 2));
	u32 qh = ld32(b + 4), q = b[8 + (e & 15)];
	u32 n = (e < 16 ? (q & 15u) : (q >> 4)) | q5_high(qh, e);
	return __fadd_rn(__fmul_rn((float)n, d), m);
}
__device__ __forceinline__ float q8_0_elem(const u8* b, int e) {
	return (float)(i8)b[2 + e] * f16_to_f32(ld16(b));
}
__device__ __forceinline__ float q2_k_elem(const u8* b, int e) {
	int n = e >> 7, r = e & 127, j = r >> 5, h = (r >> 4) & 1, l = e & 15;
	float d = f16_to_f32(ld16(b + 80)), dmin = f16_to_f32(ld16(b + 82));
	u32 sc = b[8 * n + 2 * j + h];
	float dl = __fmul_rn(d, (float)(sc & 15u)), ml = __fmul_rn(dmin, (float)(sc >> 4));
	u32 q = (b[16 + 32 * n + 16 * h + l] >> (2 * j)) & 3u;
	return __fsub_rn(__fmul_rn(dl, (float)q), ml);
}
__device__ __forceinline__ int q3_k_scale(const u8* p, int s) {
	int g = s >> 2, k = s & 3;
	u32 lo, hi;
	switch (g) {
	case 0: lo = p[k] & 15u; hi = p[8 + k] & 3u; break;
	case 1: lo = p[4 + k] & 15u; hi = (p[8 + k] >> 2) & 3u; break;
	case 2: lo = p[k] >> 4; hi = (p[8 + k] >> 4) & 3u; break;
	default: lo = p[4 + k] >> 4; hi = (p[8 + k] >> 6) & 3u; break;
	}
	return (int)(lo | (hi << 4));
}
__device__ __forceinline__ float q3_k_elem(const u8* b, int e) {
	int n = e >> 7, r = e & 127, j = r >> 5, h = (r >> 4) & 1, l = e & 15;
	float d = f16_to_f32(ld16(b + 108));
	float dl = __fmul_rn(d, (float)(q3_k_scale(b + 96, 8 * n + 2 * j + h) - 32));
	int v = (int)((b[32 + 32 * n + 16 * h + l] >> (2 * j)) & 3u);
	if ((b[16 * h + l] & (1u << (4 * n + j))) == 0) v -= 4;
	return __fmul_rn(dl, (float)v);
}
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, u32* sc, u32* m) {
	if (j < 4) {
		*sc = q[j] & 63u;
		*m = q[j + 4] & 63u;
	} else {
		*sc = (q[j + 4] & 15u) | ((u32)(q[j - 4] >> 6) << 4);
		*m = (u32)(q[j + 4] >> 4) | ((u32)(q[j] >> 6) << 4);
	}
}
__device__ __forceinline__ float q4_k_elem(const u8* b, int e) {
	int i = e >> 6, hi = (e >> 5) & 1, l = e & 31;
	float d = f16_to_f32(ld16(b)), dmin = f16_to_f32(ld16(b + 2));
	u32 sc, m;
	scale_min_k4(2 * i + hi, b + 4, &sc, &m);
	u32 q = b[16 + 32 * i + l];
	u32 n = hi ? (q >> 4) : (q & 15u);
	return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc), (float)n), __fmul_rn(dmin, (float)m));
}
__device__ __forceinline__ float q5_k_elem(const u8* b, int e) {
	int i = e >> 6, hi = (e >> 5) & 1, l = e & 31;
	float d = f16_to_f32(ld16(b)), dmin = f16_to_f32(ld16(b + 2));
	u32 sc, m;
	scale_min_k4(2 * i + hi, b + 4, &sc, &m);
	u32 q = b[48 + 32 * i + l];
	u32 n = hi ? (q >> 4) : (q & 15u);
	u32 u = (hi ? 2u : 1u) << (2 * i);
	if (b[16 + l] & u) n += 16;
	return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc), (float)n), __fmul_rn(dmin, (float)m));
}
__device__ __forceinline__ float q6_k_elem(const u8* b, int e) {
	int n = e >> 7, r = e & 127, k = r >> 5, l = r & 31, is = l >> 4;
	const u8* ql = b + 64 * n;
	const u8* qh = b + 128 + 32 * n;
	const u8* sc = b + 192 + 8 * n;
	u32 lo = (k & 1) ? ql[l + 32] : ql[l];
	lo = (k & 2) ? (lo >> 4) : (lo & 15u);
	u32 hi = (qh[l] >> (2 * k)) & 3u;
	int q = (int)(lo | (hi << 4)) - 32;
	return __fmul_rn(__fmul_rn(f16_to_f32(ld16(b + 208)), (float)(i8)sc[is + 2 * k]), (float)q);
}

// block geometry of the GGUF types: elements and bytes per block
__device__ __forceinline__ int block_elems(int dt) { return dt >= DT_Q2_K ? 256 : (dt >= DT_Q4_0 ? 32 : 1); }
__device__ __forceinline__ int block_bytes(int dt) {
	switch (dt) {
	case DT_Q4_0: return 18;
	case DT_Q4_1: return 20;
	case DT_Q5_0: return 22;
	case DT_Q5_1: return 24;
	case DT_Q8_0: return 34;
	case DT_Q2_K: return 84;
	case DT_Q3_K: return 110;
	case DT_Q4_K: return 144;
	case DT_Q5_K: return 176;
	case DT_Q6_K: return 210;
	}
	return 0;
}

// load_weight reads element p of a weight row (row points at the row's first byte),
// any dtype: plain floats by index, GGUF blocks decoded element by element.
__device__ __forceinline__ float load_weight(const u8* row, int p, int dt) {
	if (dt < DT_Q4_0) return load_plain(row, p, dt);
	int be = block_elems(dt);
	const u8* b = row + (i64)(p / be) * block_bytes(dt);
	int e = p % be;
	switch (dt) {
	case DT_Q4_0: return q4_0_elem(b, e);
	case DT_Q4_1: return q4_1_elem(b, e);
	case DT_Q5_0: return q5_0_elem(b, e);
	case DT_Q5_1: return q5_1_elem(b, e);
	case DT_Q8_0: return q8_0_elem(b, e);
	case DT_Q2_K: return q2_k_elem(b, e);
	case DT_Q3_K: return q3_k_elem(b, e);
	case DT_Q4_K: return q4_k_elem(b, e);
	case DT_Q5_K: return q5_k_elem(b, e);
	default: return q6_k_elem(b, e);
	}
}

// block-wide sums (blockDim.x a multiple of 32, at most 1024); every thread gets the result
__device__ double block_sum_d(double v, double* sh) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0) sh[w] = v;
	__syncthreads();
	double t = 0;
	for (int i = 0; i < nw; ++i) t += sh[i];
	return t;
}

__device__ float block_sum_f(float v, float* sh) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0) sh[w] = v;
	__syncthreads();
	float t = 0;
	for (int i = 0; i < nw; ++i) t += sh[i];
	return t;
}

// NaN-propagating max (fmaxf drops NaN)
__device__ __forceinline__ float nanmax(float a, float b) { return (a != a || b != b) ? FF_NAN : fmaxf(a, b); }

__device__ float block_max_f(float v, float* sh) {
	for (int o = 16; o > 0; o >>= 1) v = nanmax(v, __shfl_xor_sync(0xffffffffu, v, o));
	int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0) sh[w] = v;
	__syncthreads();
	float t = sh[0];
	for (int i = 1; i < nw; ++i) t = nanmax(t, sh[i]);
	return t;
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
