//go:build ignore

// asmgen writes gemm_amd64.s: the AVX-512 and AVX2 micro-kernels and the
// FMA-peak loops. The kernels are fully unrolled over the register tile,
// which is tedious and error-prone by hand, hence a generator.
//
//	go run asmgen.go > gemm_amd64.s
package main

import (
	"fmt"
	"os"
	"strings"
)

var out strings.Builder

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }
func label(l string)               { fmt.Fprintf(&out, "%s:\n", l) }

// tile emits func name(kc int, a, b, c *float32, ldc int, acc uintptr)
// computing an mr×(nv·lanes) tile with vector registers of the given
// prefix ("Z" or "Y"): accumulators R0..R(mr·nv-1), B in the next nv
// registers, broadcast A values in the rest, unrolled unroll times over k.
//
// With bf16 set the packed slivers hold pairs of bfloat16 (two k steps per
// 32-bit element), A pairs are broadcast with VPBROADCASTD and the FMA
// becomes VDPBF16PS, which adds both products of a pair into float32; kc
// then counts pairs.
//
// bstep is the byte distance between k steps of the packed B sliver: nv
// vectors for a full tile, or more for a narrow-edge kernel that reads only
// the first nv vectors of a wider sliver.
//
// panel is the element type of the packed B sliver: "f32", or the 16-bit
// "f16" and "bf16" of a weight packed once in its stored dtype (Packed),
// widened to float32 as it is loaded: VCVTPH2PS, or a zero-extension and a
// 16-bit shift. The products and sums are the f32 kernel's.
func tile(name, reg string, lanes, mr, nv, nregs, unroll, bstep int, bf16 bool, panel string) {
	nacc := mr * nv
	bReg := nacc
	aReg := nacc + nv
	nA := nregs - aReg
	vb := lanes * 4 // bytes per vector
	r := func(i int) string { return fmt.Sprintf("%s%d", reg, i) }
	fmt.Fprintf(&out, "\n// func %s(kc int, a, b, c *float32, ldc int, acc uintptr)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-48\n", name)
	p("MOVQ kc+0(FP), CX")
	p("MOVQ a+8(FP), SI")
	p("MOVQ b+16(FP), DI")
	p("MOVQ c+24(FP), DX")
	p("MOVQ ldc+32(FP), R8")
	p("SHLQ $2, R8")
	for i := 0; i < nacc; i++ {
		if reg == "Z" {
			p("VPXORD %s, %s, %s", r(i), r(i), r(i))
		} else {
			p("VPXOR %s, %s, %s", r(i), r(i), r(i))
		}
	}
	step := func(u int) {
		for v := 0; v < nv; v++ {
			switch panel {
			case "f16":
				p("VCVTPH2PS %d(DI), %s", u*bstep+v*vb/2, r(bReg+v))
			case "bf16":
				p("VPMOVZXWD %d(DI), %s", u*bstep+v*vb/2, r(bReg+v))
				p("VPSLLD $16, %s, %s", r(bReg+v), r(bReg+v))
			default:
				p("VMOVUPS %d(DI), %s", u*bstep+v*vb, r(bReg+v))
			}
		}
		for i := 0; i < mr; i++ {
			ar := r(aReg + i%nA)
			if bf16 {
				p("VPBROADCASTD %d(SI), %s", (u*mr+i)*4, ar)
				for v := 0; v < nv; v++ {
					p("%s // VDPBF16PS %s, %s, %s", vdpbf16ps(i*nv+v, aReg+i%nA, bReg+v), r(bReg+v), ar, r(i*nv+v))
				}
				continue
			}
			if nv == 1 && reg == "Z" {
				// One FMA per A element: an embedded broadcast saves the
				// separate broadcast uop, which bound the narrow kernel on
				// load/issue slots.
				p("VFMADD231PS.BCST %d(SI), %s, %s", (u*mr+i)*4, r(bReg), r(i))
				continue
			}
			p("VBROADCASTSS %d(SI), %s", (u*mr+i)*4, ar)
			for v := 0; v < nv; v++ {
				p("VFMADD231PS %s, %s, %s", r(bReg+v), ar, r(i*nv+v))
			}
		}
	}
	p("CMPQ CX, $%d", unroll)
	p("JL %s_tail", name)
	label(name + "_loop")
	for u := 0; u < unroll; u++ {
		step(u)
	}
	p("ADDQ $%d, SI", unroll*mr*4)
	p("ADDQ $%d, DI", unroll*bstep)
	p("SUBQ $%d, CX", unroll)
	p("CMPQ CX, $%d", unroll)
	p("JGE %s_loop", name)
	label(name + "_tail")
	p("TESTQ CX, CX")
	p("JZ %s_store", name)
	step(0)
	p("ADDQ $%d, SI", mr*4)
	p("ADDQ $%d, DI", bstep)
	p("DECQ CX")
	p("JMP %s_tail", name)
	label(name + "_store")
	p("MOVQ acc+40(FP), AX")
	p("TESTQ AX, AX")
	p("JZ %s_set", name)
	for i := 0; i < mr; i++ {
		for v := 0; v < nv; v++ {
			p("VADDPS %d(DX), %s, %s", v*vb, r(i*nv+v), r(i*nv+v))
			p("VMOVUPS %s, %d(DX)", r(i*nv+v), v*vb)
		}
		if i < mr-1 {
			p("ADDQ R8, DX")
		}
	}
	p("VZEROUPPER")
	p("RET")
	label(name + "_set")
	for i := 0; i < mr; i++ {
		for v := 0; v < nv; v++ {
			p("VMOVUPS %s, %d(DX)", r(i*nv+v), v*vb)
		}
		if i < mr-1 {
			p("ADDQ R8, DX")
		}
	}
	p("VZEROUPPER")
	p("RET")
}

// peak emits func name(iters int): iters × nacc independent vector FMAs
// (instr) on nacc accumulators, enough to cover the FMA latency on both
// pipes, so the loop runs at the core's FMA throughput.
func peak(name, reg, instr string, nacc int) {
	r := func(i int) string { return fmt.Sprintf("%s%d", reg, i) }
	fmt.Fprintf(&out, "\n// func %s(iters int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-8\n", name)
	p("MOVQ iters+0(FP), CX")
	for i := 0; i < nacc+2; i++ {
		if reg == "Z" {
			p("VPXORD %s, %s, %s", r(i), r(i), r(i))
		} else {
			p("VPXOR %s, %s, %s", r(i), r(i), r(i))
		}
	}
	label(name + "_loop")
	for i := 0; i < nacc; i++ {
		if instr == "VDPBF16PS" {
			p("%s // VDPBF16PS %s, %s, %s", vdpbf16ps(i, nacc, nacc+1), r(nacc+1), r(nacc), r(i))
			continue
		}
		p("%s %s, %s, %s", instr, r(nacc), r(nacc+1), r(i))
	}
	p("DECQ CX")
	p("JNZ %s_loop", name)
	p("VZEROUPPER")
	p("RET")
}

// dot emits func name(a, b *float32, n int) float32 for n a multiple of
// the vector width: four accumulators over 4-vector steps, then one
// vector at a time, then a horizontal sum.
func dot(name, reg string, lanes int) {
	r := func(i int) string { return fmt.Sprintf("%s%d", reg, i) }
	vb := lanes * 4
	fmt.Fprintf(&out, "\n// func %s(a, b *float32, n int) float32\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-28\n", name)
	p("MOVQ a+0(FP), SI")
	p("MOVQ b+8(FP), DI")
	p("MOVQ n+16(FP), CX")
	for i := 0; i < 4; i++ {
		if reg == "Z" {
			p("VPXORD %s, %s, %s", r(i), r(i), r(i))
		} else {
			p("VPXOR %s, %s, %s", r(i), r(i), r(i))
		}
	}
	label(name + "_loop4")
	p("CMPQ CX, $%d", 4*lanes)
	p("JL %s_loop1", name)
	for i := 0; i < 4; i++ {
		p("VMOVUPS %d(SI), %s", i*vb, r(4+i))
		p("VFMADD231PS %d(DI), %s, %s", i*vb, r(4+i), r(i))
	}
	p("ADDQ $%d, SI", 4*vb)
	p("ADDQ $%d, DI", 4*vb)
	p("SUBQ $%d, CX", 4*lanes)
	p("JMP %s_loop4", name)
	label(name + "_loop1")
	p("CMPQ CX, $%d", lanes)
	p("JL %s_sum", name)
	p("VMOVUPS (SI), %s", r(4))
	p("VFMADD231PS (DI), %s, %s", r(4), r(0))
	p("ADDQ $%d, SI", vb)
	p("ADDQ $%d, DI", vb)
	p("SUBQ $%d, CX", lanes)
	p("JMP %s_loop1", name)
	label(name + "_sum")
	p("VADDPS %s, %s, %s", r(1), r(0), r(0))
	p("VADDPS %s, %s, %s", r(3), r(2), r(2))
	p("VADDPS %s, %s, %s", r(2), r(0), r(0))
	if reg == "Z" {
		p("VEXTRACTF64X4 $1, Z0, Y1")
		p("VADDPS Y1, Y0, Y0")
	}
	p("VEXTRACTF128 $1, Y0, X1")
	p("VADDPS X1, X0, X0")
	p("VHADDPS X0, X0, X0")
	p("VHADDPS X0, X0, X0")
	p("VZEROUPPER")
	p("MOVSS X0, ret+24(FP)")
	p("RET")
}

// cvt emits func name(dst *float32, src *byte, n int) for n a positive
// multiple of the vector width, converting binary16 (VCVTPH2PS) or
// bfloat16 (zero-extend, shift into the top half) to float32.
func cvt(name, reg string, lanes int, bf16 bool) {
	vb := lanes * 4
	fmt.Fprintf(&out, "\n// func %s(dst *float32, src *byte, n int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-24\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	label(name + "_loop")
	if bf16 {
		p("VPMOVZXWD (SI), %s0", reg)
		p("VPSLLD $16, %s0, %s0", reg, reg)
	} else {
		p("VCVTPH2PS (SI), %s0", reg)
	}
	p("VMOVUPS %s0, (DI)", reg)
	p("ADDQ $%d, SI", lanes*2)
	p("ADDQ $%d, DI", vb)
	p("SUBQ $%d, CX", lanes)
	p("JNZ %s_loop", name)
	p("VZEROUPPER")
	p("RET")
}

// narrow emits func name(dst *uint16, src *float32, n int) for n a positive
// multiple of 16, writing float32 back as binary16 (VCVTPS2PH, round to
// nearest even) or as the top half of each value (bfloat16 by truncation).
// Pack uses it on values widened from those formats moments before, where
// both are exact.
func narrow(name string, bf16 bool) {
	fmt.Fprintf(&out, "\n// func %s(dst *uint16, src *float32, n int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-24\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	label(name + "_loop")
	if bf16 {
		p("VMOVUPS (SI), Z0")
		p("VPSRLD $16, Z0, Z0")
		p("VPMOVDW Z0, (DI)")
	} else {
		p("VMOVUPS (SI), Z0")
		p("VCVTPS2PH $0, Z0, (DI)")
	}
	p("ADDQ $64, SI")
	p("ADDQ $32, DI")
	p("SUBQ $16, CX")
	p("JNZ %s_loop", name)
	p("VZEROUPPER")
	p("RET")
}

// decQ emits func name(dst *float32, src *byte, nblocks int), nblocks ≥ 1,
// converting GGUF Q8_0 (34-byte blocks: f16 d, 32 int8) or Q4_0 (18-byte
// blocks: f16 d, 16 bytes whose low nibbles are elements 0..15 and high
// nibbles 16..31, offset by 8) to float32 with AVX-512F: the scale is
// converted with VCVTPH2PS and broadcast, the quants are widened to int32,
// converted and multiplied. Each product is exact in float32, as in Go.
func decQ(name string, q4 bool) {
	fmt.Fprintf(&out, "\n// func %s(dst *float32, src *byte, nblocks int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-24\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ nblocks+16(FP), CX")
	if q4 {
		p("MOVL $15, AX")
		p("VPBROADCASTD AX, Z15")
		p("MOVL $8, AX")
		p("VPBROADCASTD AX, Z14")
	}
	label(name + "_loop")
	p("MOVWLZX (SI), AX")
	p("VMOVD AX, X1")
	p("VCVTPH2PS X1, X1")
	p("VBROADCASTSS X1, Z1")
	if q4 {
		p("VPMOVZXBD 2(SI), Z2")
		p("VPANDD Z15, Z2, Z3")
		p("VPSUBD Z14, Z3, Z3")
		p("VCVTDQ2PS Z3, Z3")
		p("VMULPS Z1, Z3, Z3")
		p("VMOVUPS Z3, (DI)")
		p("VPSRLD $4, Z2, Z4")
		p("VPSUBD Z14, Z4, Z4")
		p("VCVTDQ2PS Z4, Z4")
		p("VMULPS Z1, Z4, Z4")
		p("VMOVUPS Z4, 64(DI)")
		p("ADDQ $18, SI")
	} else {
		for h := 0; h < 2; h++ {
			p("VPMOVSXBD %d(SI), Z%d", 2+16*h, 2+h)
			p("VCVTDQ2PS Z%d, Z%d", 2+h, 2+h)
			p("VMULPS Z1, Z%d, Z%d", 2+h, 2+h)
			p("VMOVUPS Z%d, %d(DI)", 2+h, 64*h)
		}
		p("ADDQ $34, SI")
	}
	p("ADDQ $128, DI")
	p("DECQ CX")
	p("JNZ %s_loop", name)
	p("VZEROUPPER")
	p("RET")
}

// packT emits func packTAVX512(dst, src *float32, ld, kc16, groups, stride
// int): the first kc16 (a positive multiple of 16) columns of 4·groups rows
// (row stride ld elements) into a k-major sliver of width stride,
// dst[p·stride+i] = src[i·ld+p]. It packs both A slivers (12 rows) and
// slivers of a transposed or stored B (32 rows of W). Each group of four
// rows is loaded 16 columns at a time and transposed as four 4×4 blocks
// per 128-bit lane (unpack, then shuffle); lane L of result j holds the
// four rows at column 4L+j and is stored with VEXTRACTF32X4.
func packT(name, reg string, lanes int) {
	cols := 4 * lanes // columns per chunk
	fmt.Fprintf(&out, "\n// func %s(dst, src *float32, ld, kc%d, groups, stride int)\n", name, cols)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-48\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ ld+16(FP), R9")
	p("SHLQ $2, R9")
	p("LEAQ (R9)(R9*2), R10")
	p("MOVQ kc%d+24(FP), CX", cols)
	p("MOVQ stride+40(FP), R8")
	p("SHLQ $2, R8")          // bytes per packed k step
	p("LEAQ (R8)(R8*2), R12") // 3 steps
	p("MOVQ R8, R13")
	p("SHLQ $%d, R13", map[int]int{8: 3, 16: 4}[cols]) // the destination advance per chunk
	label(name + "_chunk")
	p("MOVQ SI, BX")
	p("MOVQ DI, DX")
	p("MOVQ groups+32(FP), R11")
	label(name + "_group")
	p("VMOVUPS (BX), %s0", reg)
	p("VMOVUPS (BX)(R9*1), %s1", reg)
	p("VMOVUPS (BX)(R9*2), %s2", reg)
	p("VMOVUPS (BX)(R10*1), %s3", reg)
	p("VUNPCKLPS %[1]s1, %[1]s0, %[1]s4", reg) // r0[0] r1[0] r0[1] r1[1] per lane
	p("VUNPCKHPS %[1]s1, %[1]s0, %[1]s5", reg) // r0[2] r1[2] r0[3] r1[3]
	p("VUNPCKLPS %[1]s3, %[1]s2, %[1]s6", reg)
	p("VUNPCKHPS %[1]s3, %[1]s2, %[1]s7", reg)
	p("VSHUFPS $0x44, %[1]s6, %[1]s4, %[1]s8", reg)  // column 0 of each lane: r0..r3
	p("VSHUFPS $0xEE, %[1]s6, %[1]s4, %[1]s9", reg)  // column 1
	p("VSHUFPS $0x44, %[1]s7, %[1]s5, %[1]s10", reg) // column 2
	p("VSHUFPS $0xEE, %[1]s7, %[1]s5, %[1]s11", reg) // column 3
	// Lane l of column register j goes to packed step 4l+j: AX walks the
	// lanes (4 steps apart), and j is an offset of 0..3 steps from AX.
	p("MOVQ DX, AX")
	for l := 0; l < lanes; l++ {
		for j := 0; j < 4; j++ {
			addr := [4]string{"(AX)", "(AX)(R8*1)", "(AX)(R8*2)", "(AX)(R12*1)"}[j]
			switch {
			case l == 0:
				p("VMOVUPS X%d, %s", 8+j, addr)
			case reg == "Y":
				p("VEXTRACTF128 $%d, Y%d, %s", l, 8+j, addr)
			default:
				p("VEXTRACTF32X4 $%d, Z%d, %s", l, 8+j, addr)
			}
		}
		if l < lanes-1 {
			p("LEAQ (AX)(R8*4), AX")
		}
	}
	p("LEAQ (BX)(R9*4), BX")
	p("ADDQ $16, DX")
	p("DECQ R11")
	p("JNZ %s_group", name)
	p("ADDQ $%d, SI", cols*4)
	p("ADDQ R13, DI")
	p("SUBQ $%d, CX", cols)
	p("JNZ %s_chunk", name)
	p("VZEROUPPER")
	p("RET")
}

// decQ8AVX2 emits func decQ8_0AVX2(dst *float32, src *byte, nblocks int),
// nblocks ≥ 1: Q8_0 with AVX2 and F16C, eight quants at a time
// (VPMOVSXBD, VCVTDQ2PS, VMULPS by the broadcast scale), bit-identical to
// the Go decoder.
func decQ8AVX2() {
	fmt.Fprintf(&out, "\n// func decQ8_0AVX2(dst *float32, src *byte, nblocks int)\n")
	fmt.Fprintf(&out, "TEXT ·decQ8_0AVX2(SB), NOSPLIT, $0-24\n")
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ nblocks+16(FP), CX")
	label("decQ8_0AVX2_loop")
	p("MOVWLZX (SI), AX")
	p("VMOVD AX, X1")
	p("VCVTPH2PS X1, X1")
	p("VBROADCASTSS X1, Y1")
	for h := 0; h < 4; h++ {
		p("VPMOVSXBD %d(SI), Y%d", 2+8*h, 2+h)
		p("VCVTDQ2PS Y%d, Y%d", 2+h, 2+h)
		p("VMULPS Y1, Y%d, Y%d", 2+h, 2+h)
		p("VMOVUPS Y%d, %d(DI)", 2+h, 32*h)
	}
	p("ADDQ $34, SI")
	p("ADDQ $128, DI")
	p("DECQ CX")
	p("JNZ decQ8_0AVX2_loop")
	p("VZEROUPPER")
	p("RET")
}

// decQ4K emits func decQ4KAVX512(dst *float32, qs *byte, dm *float32):
// one Q4_K super-block's 128 bytes of nibbles to 256 floats, given dm =
// the eight sub-blocks' (d·scale, dmin·min) pairs. Chunk c of 32 bytes
// holds sub-block 2c in its low nibbles and 2c+1 in its high nibbles;
// x = d·scale·q − dmin·min, multiplied and subtracted separately (no FMA)
// so that the result is bit-identical to the Go decoder.
func decQ4K() {
	fmt.Fprintf(&out, "\n// func decQ4KAVX512(dst *float32, qs *byte, dm *float32)\n")
	fmt.Fprintf(&out, "TEXT ·decQ4KAVX512(SB), NOSPLIT, $0-24\n")
	p("MOVQ dst+0(FP), DI")
	p("MOVQ qs+8(FP), SI")
	p("MOVQ dm+16(FP), DX")
	p("MOVL $15, AX")
	p("VPBROADCASTD AX, Z15")
	for c := 0; c < 4; c++ {
		p("VBROADCASTSS %d(DX), Z8", 4*(4*c))
		p("VBROADCASTSS %d(DX), Z9", 4*(4*c+1))
		p("VBROADCASTSS %d(DX), Z10", 4*(4*c+2))
		p("VBROADCASTSS %d(DX), Z11", 4*(4*c+3))
		for h := 0; h < 2; h++ {
			p("VPMOVZXBD %d(SI), Z2", 32*c+16*h)
			p("VPANDD Z15, Z2, Z3")
			p("VPSRLD $4, Z2, Z4")
			p("VCVTDQ2PS Z3, Z3")
			p("VCVTDQ2PS Z4, Z4")
			p("VMULPS Z8, Z3, Z3")
			p("VSUBPS Z9, Z3, Z3")
			p("VMOVUPS Z3, %d(DI)", (64*c+16*h)*4)
			p("VMULPS Z10, Z4, Z4")
			p("VSUBPS Z11, Z4, Z4")
			p("VMOVUPS Z4, %d(DI)", (64*c+32+16*h)*4)
		}
	}
	p("VZEROUPPER")
	p("RET")
}

// vcvtneps2bf16 encodes VCVTNEPS2BF16 ymm(dst), zmm(src) (EVEX.512.F3.0F38.W0
// 72 /r; registers 0..7), which the Go assembler does not know: 16 floats
// to 16 bfloat16, round to nearest even.
func vcvtneps2bf16(dst, src int) string {
	return fmt.Sprintf("BYTE $0x62; BYTE $0xf2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0x%02x;", 0xc0|dst<<3|src)
}

// pairs emits func name(buf *float32, kc2 int) rewriting kc2 pairs of rows
// of a w-wide k-major sliver in place as bfloat16 pairs (see toBF16Pairs):
// row 2p goes to the low halves and row 2p+1 to the high halves of row p.
// Each step loads both source rows before storing over the first, and the
// store of row p never reaches a row not yet read. w = 12 uses a 12-lane
// mask.
func pairs(name string, w int) {
	fmt.Fprintf(&out, "\n// func %s(buf *float32, kc2 int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-16\n", name)
	p("MOVQ buf+0(FP), SI")
	p("MOVQ SI, DI")
	p("MOVQ kc2+8(FP), CX")
	if w%16 != 0 {
		p("MOVL $%d, AX", 1<<(w%16)-1)
		p("KMOVW AX, K1")
	}
	label(name + "_loop")
	for c := 0; c < (w+15)/16; c++ {
		masked := w%16 != 0 && c == w/16
		ld := func(off, z int) {
			if masked {
				p("VMOVUPS.Z %d(SI), K1, Z%d", off, z)
			} else {
				p("VMOVUPS %d(SI), Z%d", off, z)
			}
		}
		ld(c*64, 0)
		ld(w*4+c*64, 1)
		p("%s // VCVTNEPS2BF16 Z0, Y2", vcvtneps2bf16(2, 0))
		p("%s // VCVTNEPS2BF16 Z1, Y3", vcvtneps2bf16(3, 1))
		p("VPMOVZXWD Y2, Z2")
		p("VPMOVZXWD Y3, Z3")
		p("VPSLLD $16, Z3, Z3")
		p("VPORD Z3, Z2, Z2")
		if masked {
			p("VMOVUPS Z2, K1, %d(DI)", c*64)
		} else {
			p("VMOVUPS Z2, %d(DI)", c*64)
		}
	}
	p("ADDQ $%d, SI", 2*w*4)
	p("ADDQ $%d, DI", w*4)
	p("DECQ CX")
	p("JNZ %s_loop", name)
	p("VZEROUPPER")
	p("RET")
}

// vdpbf16ps encodes VDPBF16PS zmm(dst), zmm(src1), zmm(src2) (Intel
// operand order; EVEX.512.F3.0F38.W0 52 /r), which the Go assembler does
// not know, as BYTE directives.
func vdpbf16ps(dst, src1, src2 int) string {
	inv := func(x, bit int) int { return ^(x >> bit) & 1 }
	p0 := inv(dst, 3)<<7 | inv(src2, 4)<<6 | inv(src2, 3)<<5 | inv(dst, 4)<<4 | 0b0010
	p1 := (^src1&15)<<3 | 1<<2 | 0b10
	p2 := 0b10<<5 | inv(src1, 4)<<3
	modrm := 0xc0 | (dst&7)<<3 | src2&7
	return fmt.Sprintf("BYTE $0x62; BYTE $0x%02x; BYTE $0x%02x; BYTE $0x%02x; BYTE $0x52; BYTE $0x%02x;", p0, p1, p2, modrm)
}

// gather12 emits func packGather12AVX512(dst, src *float32, offs *int, kc int),
// kc ≥ 1: the A packing of LinearGather for a full 12-row sliver. Step p
// copies the 12 floats at src + offs[p] (in elements) to dst + 48·p with one
// masked load and one masked store, so nothing past the 12 floats is read.
func gather12() {
	fmt.Fprintf(&out, "\n// func packGather12AVX512(dst, src *float32, offs *int, kc int)\n")
	fmt.Fprintf(&out, "TEXT ·packGather12AVX512(SB), NOSPLIT, $0-32\n")
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ offs+16(FP), BX")
	p("MOVQ kc+24(FP), CX")
	p("MOVL $0xfff, AX")
	p("KMOVW AX, K1")
	label("packGather12AVX512_loop")
	p("MOVQ (BX), DX")
	p("VMOVUPS (SI)(DX*4), K1, Z0")
	p("VMOVUPS Z0, K1, (DI)")
	p("ADDQ $48, DI")
	p("ADDQ $8, BX")
	p("DECQ CX")
	p("JNZ packGather12AVX512_loop")
	p("VZEROUPPER")
	p("RET")
}

// prefetch emits func prefetchLines(p *byte, lines int), lines ≥ 1:
// PREFETCHT0 of lines consecutive 64-byte cache lines from p.
func prefetch() {
	fmt.Fprintf(&out, "\n// func prefetchLines(p *byte, lines int)\n")
	fmt.Fprintf(&out, "TEXT ·prefetchLines(SB), NOSPLIT, $0-16\n")
	p("MOVQ p+0(FP), SI")
	p("MOVQ lines+8(FP), CX")
	label("prefetchLines_loop")
	p("PREFETCHT0 (SI)")
	p("ADDQ $64, SI")
	p("DECQ CX")
	p("JNZ prefetchLines_loop")
	p("RET")
}

func main() {
	out.WriteString("// Code generated by asmgen.go; DO NOT EDIT.\n\n//go:build amd64\n\n#include \"textflag.h\"\n")
	tile("tileAVX512", "Z", 16, 12, 2, 32, 4, 128, false, "f32")
	tile("tileAVX512Half", "Z", 16, 12, 1, 32, 4, 128, false, "f32")
	tile("tileAVX2", "Y", 8, 6, 2, 16, 4, 64, false, "f32")
	tile("tileBF16AVX512", "Z", 16, 12, 2, 32, 4, 128, true, "f32")
	tile("tileBF16AVX512Half", "Z", 16, 12, 1, 32, 4, 128, true, "f32")
	tile("tileAVX512PH", "Z", 16, 12, 2, 32, 4, 64, false, "f16")
	tile("tileAVX512PHHalf", "Z", 16, 12, 1, 32, 4, 64, false, "f16")
	tile("tileAVX512PB", "Z", 16, 12, 2, 32, 4, 64, false, "bf16")
	tile("tileAVX512PBHalf", "Z", 16, 12, 1, 32, 4, 64, false, "bf16")
	tile("tileAVX2PH", "Y", 8, 6, 2, 16, 4, 32, false, "f16")
	tile("tileAVX2PB", "Y", 8, 6, 2, 16, 4, 32, false, "bf16")
	dot("dotAVX512", "Z", 16)
	dot("dotAVX2", "Y", 8)
	cvt("cvtF16AVX512", "Z", 16, false)
	cvt("cvtF16AVX2", "Y", 8, false)
	cvt("cvtBF16AVX512", "Z", 16, true)
	cvt("cvtBF16AVX2", "Y", 8, true)
	narrow("narrowF16AVX512", false)
	narrow("narrowBF16AVX512", true)
	packT("packTAVX512", "Z", 4)
	packT("packTAVX2", "Y", 2)
	decQ8AVX2()
	pairs("pairs12BF16", 12)
	pairs("pairs32BF16", 32)
	decQ4K()
	decQ("decQ8_0AVX512", false)
	decQ("decQ4_0AVX512", true)
	gather12()
	prefetch()
	peak("fmaPeakAVX512", "Z", "VFMADD231PS", 12)
	peak("fmaPeakAVX2", "Y", "VFMADD231PS", 12)
	peak("dpbf16PeakAVX512", "Z", "VDPBF16PS", 12)
	os.Stdout.WriteString(out.String())
}
