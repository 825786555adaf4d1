package gpu

import "testing"

// The conversions themselves are tested in internal/dtype; these check the dispatch.

func TestEncodeDecodeErrors(t *testing.T) {
	if err := DecodeFloat32(Q8_0, make([]float32, 32), make([]byte, 34)); err == nil {
		t.Error("decoding Q8_0 should fail")
	}
	if err := DecodeFloat32(F16, make([]float32, 4), make([]byte, 7)); err == nil {
		t.Error("short source should fail")
	}
	if err := EncodeFloat32(DType(99), nil, nil); err == nil {
		t.Error("unknown dtype should fail")
	}
	src := []float32{1.5, -2, 0.333, 1e-7, 70000}
	for _, d := range []DType{F32, F16, BF16, F8E4M3FN, F8E5M2} {
		n, _ := d.StorageBytes(len(src))
		buf := make([]byte, n)
		if err := EncodeFloat32(d, buf, src); err != nil {
			t.Fatal(err)
		}
		back := make([]float32, len(src))
		if err := DecodeFloat32(d, back, buf); err != nil {
			t.Fatal(err)
		}
		if back[0] != 1.5 || back[1] != -2 {
			t.Errorf("%s: exact values changed: %v", d, back)
		}
	}
}
