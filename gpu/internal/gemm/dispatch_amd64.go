//go:build amd64

package gemm

import (
	"fmt"

	"golang.org/x/sys/cpu"
)

// The kc, mc and nc written here are the fixed blocking (BlockingFixed),
// measured on the development machine (AMD EPYC family 26: 48 KiB L1d,
// 1 MiB L2 per core) with BenchmarkTune; New replaces them with the ones
// deriveBlocking sizes from the caches unless asked for these (see
// codex/gemm.md, "Blocking"). The A sliver (mr×kc: 12·384·4 = 18 KiB)
// stays in L1 while the B block (kc×nc: 1.5 MiB) streams from L2 and L3;
// kc = 384 covers the SD shapes' k = 320 in one panel.
func avx512Kernel() kernel {
	return kernel{
		path: PathAVX512, mr: 12, nr: 32, kc: 384, mc: 192, nc: 1024, tile: tile12x32AVX512,
		half:     tile12x16AVX512,
		packT:    vecPackT(packTAVX512, 16),
		dot:      vecDot(dotAVX512, 16),
		cvtF16:   vecCvt(cvtF16AVX512, 16, cvtF16Generic),
		cvtBF16:  vecCvt(cvtBF16AVX512, 16, cvtBF16Generic),
		decQ8_0:  blockDec(decQ8_0AVX512, 34),
		decQ4_0:  blockDec(decQ4_0AVX512, 18),
		decQ4K:   decQ4KFast,
		gather:   gather12AVX512,
		tilePH:   panelTiles(tileAVX512PH, 12, 32, 32),
		halfPH:   panelTiles(tileAVX512PHHalf, 12, 32, 16),
		tilePB:   panelTiles(tileAVX512PB, 12, 32, 32),
		halfPB:   panelTiles(tileAVX512PBHalf, 12, 32, 16),
		narrow16: narrow16AVX512,
	}
}

func avx2Kernel() kernel {
	k := kernel{
		path: PathAVX2, mr: 6, nr: 16, kc: 384, mc: 144, nc: 1024, tile: tile6x16AVX2,
		packT:   packTGo,
		dot:     vecDot(dotAVX2, 8),
		cvtF16:  cvtF16Generic,
		cvtBF16: vecCvt(cvtBF16AVX2, 8, cvtBF16Generic),
		decQ8_0: decodeQ8_0,
		decQ4_0: decodeQ4_0,
		decQ4K:  decodeQ4K,
		tilePB:  panelTiles(tileAVX2PB, 6, 16, 16),
	}
	if cpu.X86.HasF16C {
		k.cvtF16 = vecCvt(cvtF16AVX2, 8, cvtF16Generic)
		k.decQ8_0 = blockDec(decQ8_0AVX2, 34)
		k.tilePH = panelTiles(tileAVX2PH, 6, 16, 16)
	}
	return k
}

func hasAVX2() bool       { return cpu.X86.HasAVX2 && cpu.X86.HasFMA }
func hasAVX512() bool     { return cpu.X86.HasAVX512F }
func hasAVX512BF16() bool { return cpu.X86.HasAVX512F && cpu.X86.HasAVX512BF16 }

// selectKernel returns the kernel for p, checking the CPU features it
// needs (x/sys/cpu also checks that the OS saves the wide registers).
func selectKernel(p Path) (kernel, error) {
	switch p {
	case PathAuto:
		if hasAVX512() {
			return avx512Kernel(), nil
		}
		if hasAVX2() {
			return avx2Kernel(), nil
		}
		return genericKernel(), nil
	case PathGeneric:
		return genericKernel(), nil
	case PathAVX2:
		if hasAVX2() {
			return avx2Kernel(), nil
		}
		return kernel{}, fmt.Errorf("gemm: path avx2: cpu lacks AVX2 or FMA")
	case PathAVX512:
		if hasAVX512() {
			return avx512Kernel(), nil
		}
		return kernel{}, fmt.Errorf("gemm: path avx512: cpu lacks AVX-512F")
	}
	return kernel{}, fmt.Errorf("gemm: unknown path %d", int(p))
}

// selectBF16Kernel returns the AVX512_BF16 kernel: the AVX-512 kernel's
// blocking and helpers with a VDPBF16PS micro-kernel on bfloat16 pairs.
func selectBF16Kernel(p Path) (kernel, error) {
	if p != PathAuto && p != PathAVX512 {
		return kernel{}, fmt.Errorf("gemm: bf16 dot products need path avx512, not %s", p)
	}
	if !hasAVX512BF16() {
		return kernel{}, fmt.Errorf("gemm: bf16 dot products: cpu lacks AVX512_BF16")
	}
	k := avx512Kernel()
	k.tile = tile12x32BF16
	k.half = tile12x16BF16
	k.pairs = true
	k.pairsFn = toBF16PairsFast
	return k, nil
}
