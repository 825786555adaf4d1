package weights

import (
	"encoding/binary"
	"math"
	"testing"
	"unsafe"
)

func TestAsFloat32(t *testing.T) {
	buf := make([]byte, 4*5+1)
	for i := 0; i < 5; i++ {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(float32(i)+0.5))
	}
	v, ok := AsFloat32(buf[:20])
	if !ok || len(v) != 5 || v[0] != 0.5 || v[4] != 4.5 {
		t.Fatalf("AsFloat32 = %v, %v", v, ok)
	}
	if &v[0] != (*float32)(unsafe.Pointer(&buf[0])) {
		t.Errorf("AsFloat32 copied")
	}
	if _, ok := AsFloat32(buf[1:21]); ok {
		t.Errorf("misaligned view accepted")
	}
	if _, ok := AsFloat32(buf[:7]); ok {
		t.Errorf("partial element accepted")
	}
	if u, ok := AsUint16(buf[:4]); !ok || len(u) != 2 || u[1] != binary.LittleEndian.Uint16(buf[2:]) {
		t.Errorf("AsUint16 = %v, %v", u, ok)
	}
	if _, ok := AsUint16(buf[1:5]); ok {
		t.Errorf("misaligned uint16 view accepted")
	}
}
