//go:build amd64

#include "textflag.h"

// Constants for expScaleAVX512, broadcast from this table (see softmax_amd64.go).
DATA expConsts<>+0(SB)/4, $-104.0        // lower clamp: e^-104 rounds to 0; keeps −Inf from making NaN
DATA expConsts<>+4(SB)/4, $1.44269504    // log2(e)
DATA expConsts<>+8(SB)/4, $0.693359375   // ln2 high part (exact in float32)
DATA expConsts<>+12(SB)/4, $-2.12194440e-4 // ln2 low part
DATA expConsts<>+16(SB)/4, $1.98412698e-4  // 1/5040
DATA expConsts<>+20(SB)/4, $1.38888889e-3  // 1/720
DATA expConsts<>+24(SB)/4, $8.33333333e-3  // 1/120
DATA expConsts<>+28(SB)/4, $4.16666667e-2  // 1/24
DATA expConsts<>+32(SB)/4, $0.166666667    // 1/6
DATA expConsts<>+36(SB)/4, $0.5
DATA expConsts<>+40(SB)/4, $1.0
DATA expConsts<>+44(SB)/4, $0xff800000 // −Inf
GLOBL expConsts<>(SB), RODATA|NOPTR, $48

// func expScaleAVX512(row []float32, scale, m float32) float32
// row[i] = exp((row[i] - m)*scale) in place; returns the sum of the results.
TEXT ·expScaleAVX512(SB), NOSPLIT, $0-36
	MOVQ row_base+0(FP), SI
	MOVQ row_len+8(FP), CX
	VBROADCASTSS scale+24(FP), Z1
	VBROADCASTSS m+28(FP), Z2
	VBROADCASTSS expConsts<>+0(SB), Z3
	VBROADCASTSS expConsts<>+4(SB), Z4
	VBROADCASTSS expConsts<>+8(SB), Z5
	VBROADCASTSS expConsts<>+12(SB), Z6
	VBROADCASTSS expConsts<>+16(SB), Z7
	VBROADCASTSS expConsts<>+20(SB), Z8
	VBROADCASTSS expConsts<>+24(SB), Z9
	VBROADCASTSS expConsts<>+28(SB), Z10
	VBROADCASTSS expConsts<>+32(SB), Z11
	VBROADCASTSS expConsts<>+36(SB), Z12
	VBROADCASTSS expConsts<>+40(SB), Z13
	VXORPS Z18, Z18, Z18

loop16:
	CMPQ CX, $16
	JLT tail
	VMOVUPS (SI), Z0
	VSUBPS Z2, Z0, Z0              // x = (s - m)·scale
	VMULPS Z1, Z0, Z0
	VMAXPS Z0, Z3, Z0              // clamp below (masked −Inf scores → exactly 0; NaN stays NaN)
	VMULPS Z4, Z0, Z15
	VRNDSCALEPS $0, Z15, Z15       // n = round(x·log2e)
	VMOVAPS Z0, Z16
	VFNMADD231PS Z5, Z15, Z16      // r = x - n·ln2hi
	VFNMADD231PS Z6, Z15, Z16      //     - n·ln2lo
	VMOVAPS Z7, Z17
	VFMADD213PS Z8, Z16, Z17       // Horner: p = ((…(r/5040 + 1/720)r + …)r + 1)r + 1
	VFMADD213PS Z9, Z16, Z17
	VFMADD213PS Z10, Z16, Z17
	VFMADD213PS Z11, Z16, Z17
	VFMADD213PS Z12, Z16, Z17
	VFMADD213PS Z13, Z16, Z17
	VFMADD213PS Z13, Z16, Z17
	VSCALEFPS Z15, Z17, Z17        // p·2^n
	VMOVUPS Z17, (SI)
	VADDPS Z17, Z18, Z18
	ADDQ $64, SI
	SUBQ $16, CX
	JMP loop16

tail:
	TESTQ CX, CX
	JZ done
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVUPS.Z (SI), K1, Z0
	VSUBPS Z2, Z0, Z0
	VMULPS Z1, Z0, Z0
	VMAXPS Z0, Z3, Z0
	VMULPS Z4, Z0, Z15
	VRNDSCALEPS $0, Z15, Z15
	VMOVAPS Z0, Z16
	VFNMADD231PS Z5, Z15, Z16
	VFNMADD231PS Z6, Z15, Z16
	VMOVAPS Z7, Z17
	VFMADD213PS Z8, Z16, Z17
	VFMADD213PS Z9, Z16, Z17
	VFMADD213PS Z10, Z16, Z17
	VFMADD213PS Z11, Z16, Z17
	VFMADD213PS Z12, Z16, Z17
	VFMADD213PS Z13, Z16, Z17
	VFMADD213PS Z13, Z16, Z17
	VSCALEFPS Z15, Z17, Z17
	VMOVUPS Z17, K1, (SI)
	VADDPS Z17, Z18, K1, Z18

done:
	VMOVAPS Z18, Z0
	VEXTRACTF32X8 $1, Z0, Y1
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	MOVSS X0, ret+32(FP)
	VZEROUPPER
	RET

// func maxAVX512(row []float32) float32
// Returns the largest element (−Inf for an empty row). NaNs are skipped.
TEXT ·maxAVX512(SB), NOSPLIT, $0-28
	MOVQ row_base+0(FP), SI
	MOVQ row_len+8(FP), CX
	VBROADCASTSS expConsts<>+44(SB), Z18
	VMOVAPS Z18, Z20

mloop:
	CMPQ CX, $16
	JLT mtail
	VMAXPS (SI), Z18, Z18
	ADDQ $64, SI
	SUBQ $16, CX
	JMP mloop

mtail:
	TESTQ CX, CX
	JZ mdone
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1
	VMOVAPS Z20, Z0
	VMOVUPS (SI), K1, Z0
	VMAXPS Z0, Z18, Z18

mdone:
	VMOVAPS Z18, Z0
	VEXTRACTF32X8 $1, Z0, Y1
	VMAXPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	MOVSS X0, ret+24(FP)
	VZEROUPPER
	RET
