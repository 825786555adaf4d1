package weights

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

// TestToFloat32 converts the same values stored in every dtype (the float arithmetic
// itself is internal/dtype's, tested there).
func TestToFloat32(t *testing.T) {
	le := binary.LittleEndian
	cases := []struct {
		dt   DType
		data []byte
	}{
		{F64, le.AppendUint64(le.AppendUint64(nil, math.Float64bits(1.5)), math.Float64bits(-2))},
		{F32, le.AppendUint32(le.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-2))},
		{F16, []byte{0x00, 0x3e, 0x00, 0xc0}},
		{BF16, []byte{0xc0, 0x3f, 0x00, 0xc0}},
		{F8_E4M3, []byte{0x3c, 0xc0}},
		{F8_E5M2, []byte{0x3e, 0xc0}},
		{I64, le.AppendUint64(le.AppendUint64(nil, 1), uint64(0xfffffffffffffffe))},
		{I32, []byte{1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff}},
		{I16, []byte{1, 0, 0xfe, 0xff}},
		{I8, []byte{1, 0xfe}},
	}
	for _, tc := range cases {
		got := make([]float32, 2)
		if err := ToFloat32(got, tc.data, tc.dt); err != nil {
			t.Fatalf("%s: %v", tc.dt, err)
		}
		want := [2]float32{1.5, -2}
		if !tc.dt.IsFloat() {
			want[0] = 1
		}
		if got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s: %v, want %v", tc.dt, got, want)
		}
	}
	u := make([]float32, 3)
	if err := ToFloat32(u, []byte{0, 1, 0xff}, U8); err != nil || u[0] != 0 || u[1] != 1 || u[2] != 255 {
		t.Errorf("U8: %v, %v", u, err)
	}
	if err := ToFloat32(u, []byte{0, 2, 0}, BOOL); err != nil || u[0] != 0 || u[1] != 1 || u[2] != 0 {
		t.Errorf("BOOL: %v, %v", u, err)
	}
}

func TestToFloat32Errors(t *testing.T) {
	if err := ToFloat32(make([]float32, 1), []byte{1, 2, 3}, F32); err == nil || !strings.Contains(err.Error(), "do not make 1 elements") {
		t.Errorf("short data: %v", err)
	}
	if err := ToFloat32(nil, nil, "Q4_0"); err == nil || !strings.Contains(err.Error(), "cannot convert Q4_0") {
		t.Errorf("block type: %v", err)
	}
}

func TestShapeElements(t *testing.T) {
	tests := []struct {
		dims []int64
		want int64
		ok   bool
	}{
		{nil, 1, true},
		{[]int64{2, 3}, 6, true},
		{[]int64{0, 1 << 62, 1 << 62}, 0, true},
		{[]int64{1 << 40, 1 << 40}, 0, false},
		{[]int64{-1}, 0, false},
	}
	for _, tc := range tests {
		got, ok := ShapeElements(tc.dims, math.MaxInt64)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ShapeElements(%v) = %d, %v", tc.dims, got, ok)
		}
	}
}

func TestErrors(t *testing.T) {
	err := error(&FormatError{Format: "gguf", File: "a.gguf", Tensor: "w", Offset: 12, Msg: "bad", Err: errors.ErrUnsupported})
	if got := err.Error(); got != `gguf: invalid format: a.gguf: tensor "w": offset 12: bad` {
		t.Errorf("FormatError = %q", got)
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Unwrap lost the cause")
	}
	err = &UnsupportedError{Format: "gguf", Offset: -1, Msg: "IQ1_M"}
	if got := err.Error(); got != "gguf: unsupported feature: IQ1_M" {
		t.Errorf("UnsupportedError = %q", got)
	}
}
