// Copies, casts and elementwise ops (gpu.OpCopy, OpCast, the activations, the binary
// ops, OpConcat). Every kernel is a grid-stride loop over the contiguous output.

extern "C" __global__ void ff_copy(u8* out, const u8* in, Desc d, i64 n, int esize) {
	GRID_STRIDE(i, n) {
		i64 o = desc_offset(d, i);
		switch (esize) {
		case 1: out[i] = in[o]; break;
		case 2: ((u16*)out)[i] = ((const u16*)in)[o]; break;
		case 4: ((u32*)out)[i] = ((const u32*)in)[o]; break;
		default: ((u64*)out)[i] = ((const u64*)in)[o]; break;
		}
	}
}

// decode_small returns the value of code c of a narrow float format (gpu/convert.go,
// smallFloat.decode), in double.
__device__ double decode_small(u32 c, int ebits, int mbits, int bias) {
	u32 mag = c & ((1u << (ebits + mbits)) - 1u);
	int e = (int)(mag >> mbits);
	double m = (double)(mag & ((1u << mbits) - 1u));
	if (e == 0) return ldexp(m, 1 - bias - mbits);
	return ldexp(1.0 + m / (double)(1 << mbits), e - bias);
}

// encode_small rounds v to nearest even in the format, as smallFloat.encode does.
__device__ u32 encode_small(float fv, int ebits, int mbits, int bias, bool hasInf, u32 nanCode, u32 maxCode) {
	double v = (double)fv;
	u32 sbit = 1u << (ebits + mbits);
	u32 sign = 0;
	if (__float_as_uint(fv) >> 31) {
		sign = sbit;
		v = -v;
	}
	if (v != v) return sign | nanCode;
	u32 over = hasInf ? (sign | (((1u << ebits) - 1u) << mbits)) : (sign | nanCode);
	if (isinf(v)) return over;
	if (v == 0) return sign;
	int emin = 1 - bias;
	int e2;
	frexp(v, &e2);
	int e = max(e2 - 1, emin);
	double q = ldexp(1.0, e - mbits);
	double r = rint(v / q);
	double val = r * q;
	if (val > decode_small(maxCode, ebits, mbits, bias)) return over;
	if (val < ldexp(1.0, emin)) return sign | (u32)r;
	int ve;
	frexp(val, &ve);
	ve--;
	u32 mant = (u32)ldexp(val, mbits - ve) - (1u << mbits);
	return sign | ((u32)(ve + bias) << mbits) | mant;
}

__device__ __forceinline__ u32 f32_to_bf16(float f) {
	u32 u = __float_as_uint(f);
	if (f != f) return ((u >> 16) & 0x8000u) | 0x7fc0u;
	u += 0x7fffu + ((u >> 16) & 1u);
	return u >> 16;
}

extern "C" __global__ void ff_cast(u8* out, const u8* in, i64 n, int from, int to) {
	GRID_STRIDE(i, n) {
		float v = load_plain(in, i, from);
		switch (to) {
		case DT_F32: ((float*)out)[i] = v; break;
		case DT_F16: ((u16*)out)[i] = (u16)encode_small(v, 5, 10, 15, true, 0x7e00u, 0x7bffu); break;
		case DT_BF16: ((u16*)out)[i] = (u16)f32_to_bf16(v); break;
		case DT_E4M3: out[i] = (u8)encode_small(v, 4, 3, 7, false, 0x7fu, 0x7eu); break;
		default: out[i] = (u8)encode_small(v, 5, 2, 15, true, 0x7fu, 0x7bu); break;
		}
	}
}

#define U_GELU 0
#define U_GELU_TANH 1
#define U_QUICK_GELU 2
#define U_SILU 3

__device__ __forceinline__ float unary(int op, float x) {
	switch (op) {
	case U_GELU: return x * 0.5f * (1.0f + erff(x * 0.70710678f));
	case U_GELU_TANH: {
		float u = 0.7978846f * x * (1.0f + 0.044715f * x * x);
		return x / (1.0f + expf(-2.0f * u));
	}
	case U_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
	default: return x / (1.0f + expf(-x));
	}
}

extern "C" __global__ void ff_unary(float* out, const float* in, Desc d, i64 n, int op) {
	GRID_STRIDE(i, n) { out[i] = unary(op, in[desc_offset(d, i)]); }
}

#define B_ADD 0
#define B_SUB 1
#define B_MUL 2
#define B_DIV 3

// da and db share the output's (merged) shape; their strides are 0 where they broadcast.
extern "C" __global__ void ff_binary(float* out, const float* a, const float* b, Desc da, Desc db, i64 n, int op) {
	GRID_STRIDE(i, n) {
		float x = a[desc_offset(da, i)], y = b[desc_offset(db, i)];
		float r;
		switch (op) {
		case B_ADD: r = x + y; break;
		case B_SUB: r = x - y; break;
		case B_MUL: r = x * y; break;
		default: r = x / y; break;
		}
		out[i] = r;
	}
}

// ff_concat_part copies one input (d over its own shape, n elements) into the output:
// the input's element (outer o, e within its seg = size_d·inner elements) goes to
// out[o·outRow + at + e].
extern "C" __global__ void ff_concat_part(float* out, const float* in, Desc d, i64 n, i64 seg, i64 outRow, i64 at) {
	GRID_STRIDE(i, n) {
		i64 o = i / seg;
		out[o * outRow + at + (i - o * seg)] = in[desc_offset(d, i)];
	}
}
