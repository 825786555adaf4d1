//go:build amd64

#include "textflag.h"

DATA actConsts<>+0(SB)/4, $-104.0        // exp input clamp
DATA actConsts<>+4(SB)/4, $1.44269504    // log2(e)
DATA actConsts<>+8(SB)/4, $0.693359375   // ln2 high
DATA actConsts<>+12(SB)/4, $-2.12194440e-4 // ln2 low
DATA actConsts<>+16(SB)/4, $1.98412698e-4  // 1/5040
DATA actConsts<>+20(SB)/4, $1.38888889e-3  // 1/720
DATA actConsts<>+24(SB)/4, $8.33333333e-3  // 1/120
DATA actConsts<>+28(SB)/4, $4.16666667e-2  // 1/24
DATA actConsts<>+32(SB)/4, $0.166666667    // 1/6
DATA actConsts<>+36(SB)/4, $0.5
DATA actConsts<>+40(SB)/4, $1.0
DATA actConsts<>+44(SB)/4, $0.70710678     // 1/√2
DATA actConsts<>+48(SB)/4, $0.3275911      // A&S 7.1.26 p
DATA actConsts<>+52(SB)/4, $0.254829592    // p1
DATA actConsts<>+56(SB)/4, $-0.284496736   // p2
DATA actConsts<>+60(SB)/4, $1.421413741    // p3
DATA actConsts<>+64(SB)/4, $-1.453152027   // p4
DATA actConsts<>+68(SB)/4, $1.061405429    // p5
DATA actConsts<>+72(SB)/4, $0x7fffffff     // abs mask
DATA actConsts<>+76(SB)/4, $0x80000000     // sign mask
DATA actConsts<>+80(SB)/4, $0.044715       // tanh-GELU cubic coefficient
DATA actConsts<>+84(SB)/4, $-1.59576912    // −2·√(2/π)
GLOBL actConsts<>(SB), RODATA|NOPTR, $88

#define LOADCONSTS \
	VBROADCASTSS actConsts<>+0(SB), Z20 \
	VBROADCASTSS actConsts<>+4(SB), Z21 \
	VBROADCASTSS actConsts<>+8(SB), Z22 \
	VBROADCASTSS actConsts<>+12(SB), Z23 \
	VBROADCASTSS actConsts<>+16(SB), Z24 \
	VBROADCASTSS actConsts<>+20(SB), Z25 \
	VBROADCASTSS actConsts<>+24(SB), Z26 \
	VBROADCASTSS actConsts<>+28(SB), Z27 \
	VBROADCASTSS actConsts<>+32(SB), Z28 \
	VBROADCASTSS actConsts<>+36(SB), Z29 \
	VBROADCASTSS actConsts<>+40(SB), Z30 \
	VBROADCASTSS actConsts<>+44(SB), Z10 \
	VBROADCASTSS actConsts<>+48(SB), Z11 \
	VBROADCASTSS actConsts<>+52(SB), Z12 \
	VBROADCASTSS actConsts<>+56(SB), Z13 \
	VBROADCASTSS actConsts<>+60(SB), Z14 \
	VBROADCASTSS actConsts<>+64(SB), Z15 \
	VBROADCASTSS actConsts<>+68(SB), Z16 \
	VBROADCASTSS actConsts<>+72(SB), Z17 \
	VBROADCASTSS actConsts<>+76(SB), Z18

// EXP: Z2 = e^Z1 (Z1 clobbered; temps Z3, Z4), as expf: n = round(x·log2e),
// r = x − n·ln2 (two parts), degree-7 polynomial, scaled by 2^n.
#define EXP \
	VMAXPS Z1, Z20, Z1 \
	VMULPS Z21, Z1, Z3 \
	VRNDSCALEPS $0, Z3, Z3 \
	VMOVAPS Z1, Z4 \
	VFNMADD231PS Z22, Z3, Z4 \
	VFNMADD231PS Z23, Z3, Z4 \
	VMOVAPS Z24, Z2 \
	VFMADD213PS Z25, Z4, Z2 \
	VFMADD213PS Z26, Z4, Z2 \
	VFMADD213PS Z27, Z4, Z2 \
	VFMADD213PS Z28, Z4, Z2 \
	VFMADD213PS Z29, Z4, Z2 \
	VFMADD213PS Z30, Z4, Z2 \
	VFMADD213PS Z30, Z4, Z2 \
	VSCALEFPS Z3, Z2, Z2

// GELU: Z0 = x·½·(1 + erf(x/√2)) with A&S 7.1.26 (temps Z1–Z9).
#define GELU \
	VMULPS Z10, Z0, Z5 \
	VANDPS Z17, Z5, Z6 \
	VMOVAPS Z11, Z7 \
	VFMADD213PS Z30, Z6, Z7 \
	VDIVPS Z7, Z30, Z7 \
	VMOVAPS Z16, Z8 \
	VFMADD213PS Z15, Z7, Z8 \
	VFMADD213PS Z14, Z7, Z8 \
	VFMADD213PS Z13, Z7, Z8 \
	VFMADD213PS Z12, Z7, Z8 \
	VMULPS Z7, Z8, Z8 \
	VMULPS Z6, Z6, Z1 \
	VXORPS Z18, Z1, Z1 \
	EXP \
	VMOVAPS Z30, Z9 \
	VFNMADD231PS Z2, Z8, Z9 \
	VANDPS Z18, Z5, Z3 \
	VXORPS Z3, Z9, Z9 \
	VADDPS Z30, Z9, Z9 \
	VMULPS Z29, Z0, Z3 \
	VMULPS Z9, Z3, Z0

// SILU: Z0 = x / (1 + e^−x) (temps Z1–Z4).
#define SILU \
	VXORPS Z18, Z0, Z1 \
	EXP \
	VADDPS Z30, Z2, Z2 \
	VDIVPS Z2, Z0, Z0

// GELUT: Z0 = x / (1 + e^(−2u)), u = √(2/π)·x·(1 + 0.044715·x²) — the tanh GELU
// written as x·σ(2u) (temps Z1–Z5; Z10, Z11 hold the two constants).
#define GELUT \
	VMULPS Z0, Z0, Z5 \
	VFMADD213PS Z30, Z10, Z5 \
	VMULPS Z0, Z5, Z5 \
	VMULPS Z11, Z5, Z1 \
	EXP \
	VADDPS Z30, Z2, Z2 \
	VDIVPS Z2, Z0, Z0

// func geluTanhAVX512(dst, src []float32)
TEXT ·geluTanhAVX512(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	LOADCONSTS
	VBROADCASTSS actConsts<>+80(SB), Z10
	VBROADCASTSS actConsts<>+84(SB), Z11

tloop:
	CMPQ CX, $16
	JLT ttail
	VMOVUPS (SI), Z0
	GELUT
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP tloop

ttail:
	TESTQ CX, CX
	JZ tdone
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Z0
	GELUT
	VMOVUPS Z0, K1, (DI)

tdone:
	VZEROUPPER
	RET

// func geluAVX512(dst, src []float32)
TEXT ·geluAVX512(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	LOADCONSTS

gloop:
	CMPQ CX, $16
	JLT gtail
	VMOVUPS (SI), Z0
	GELU
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP gloop

gtail:
	TESTQ CX, CX
	JZ gdone
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Z0
	GELU
	VMOVUPS Z0, K1, (DI)

gdone:
	VZEROUPPER
	RET

// func siluAVX512(dst, src []float32)
TEXT ·siluAVX512(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	LOADCONSTS

sloop:
	CMPQ CX, $16
	JLT stail
	VMOVUPS (SI), Z0
	SILU
	VMOVUPS Z0, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP sloop

stail:
	TESTQ CX, CX
	JZ sdone
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Z0
	SILU
	VMOVUPS Z0, K1, (DI)

sdone:
	VZEROUPPER
	RET
