// Position and layout ops: RoPE, timestep embedding, patchify, nearest upscaling,
// embedding rows.

// One thread per (x0, x1) pair; pe is (pb, L, D/2, 2, 2), pb ∈ {1, B}.
extern "C" __global__ void ff_rope(float* out, const float* x, const float* pe, i64 pairs, int H, int L, int D, int pb) {
	GRID_STRIDE(i, pairs) {
		int half = D / 2;
		i64 r = i / half;
		int kk = (int)(i - r * half);
		i64 bi = r / ((i64)H * L);
		int li = (int)(r % L);
		const float* t = pe + (((bi % pb) * L + li) * half + kk) * 4;
		float x0 = x[2 * i], x1 = x[2 * i + 1];
		out[2 * i] = __fadd_rn(__fmul_rn(t[0], x0), __fmul_rn(t[1], x1));
		out[2 * i + 1] = __fadd_rn(__fmul_rn(t[2], x0), __fmul_rn(t[3], x1));
	}
}

// freqs (half) are computed on the host with the cpu backend's expf so that both
// backends take cos/sin of the same float32 arguments; cos and sin run in double.
extern "C" __global__ void ff_timestep(float* out, const float* ts, const float* freqs, int n, int dim, float scale, int scaled) {
	int half = dim / 2;
	GRID_STRIDE(i, (i64)n * dim) {
		int row = (int)(i / dim), j = (int)(i - (i64)row * dim);
		float tv = scaled ? __fmul_rn(scale, ts[row]) : ts[row];
		float v = 0.0f;
		if (j < half) v = (float)cos((double)__fmul_rn(tv, freqs[j]));
		else if (j < 2 * half) v = (float)sin((double)__fmul_rn(tv, freqs[j - half]));
		out[i] = v;
	}
}

// (B, C, H, W) ↔ (B, (H/p)(W/p), C·p·p); toTokens picks the direction.
extern "C" __global__ void ff_patchify(float* out, const float* in, int B, int C, int H, int W, int p, int toTokens) {
	int hp = H / p, wp = W / p;
	GRID_STRIDE(img, (i64)B * C * H * W) {
		int x = (int)(img % W);
		i64 t = img / W;
		int y = (int)(t % H);
		i64 bc = t / H;
		int ci = (int)(bc % C), bi = (int)(bc / C);
		i64 tok = (((i64)bi * hp + y / p) * wp + x / p) * C * p * p + ((i64)ci * p + y % p) * p + x % p;
		if (toTokens) out[tok] = in[img];
		else out[img] = in[tok];
	}
}

// out (planes, outH, outW) gathers in (planes, h, w) at the row and column indices ys, xs.
extern "C" __global__ void ff_gather2d(float* out, const float* in, const int* ys, const int* xs, i64 planes, int h, int w, int outH, int outW) {
	GRID_STRIDE(i, planes * outH * outW) {
		int x = (int)(i % outW);
		i64 t = i / outW;
		int y = (int)(t % outH);
		i64 pl = t / outH;
		out[i] = in[(pl * h + ys[y]) * w + xs[x]];
	}
}

// rows of a (V, d) table in any weight dtype (GGUF blocks too), rowBytes bytes a row
extern "C" __global__ void ff_embedding(float* out, const u8* table, const int* ids, int n, int d, i64 rowBytes, int dt) {
	GRID_STRIDE(i, (i64)n * d) {
		int r = (int)(i / d), c = (int)(i - (i64)r * d);
		out[i] = load_weight(table + (i64)ids[r] * rowBytes, c, dt);
	}
}
