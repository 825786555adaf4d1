package statedict

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
)

type mapSource struct {
	rt *gpu.Runtime
	m  map[string][]int // key → shape (F16 storage, zeros)
}

func (s mapSource) Keys() []string {
	var k []string
	for key := range s.m {
		k = append(k, key)
	}
	return k
}

func (s mapSource) Tensor(key string) (*gpu.Tensor, error) {
	shape, ok := s.m[key]
	if !ok {
		return nil, fmt.Errorf("no %s", key)
	}
	n := 1
	for _, d := range shape {
		n *= d
	}
	return s.rt.FromBytes(gpu.F16, make([]byte, 2*n), shape...)
}

type block struct {
	W *gpu.Tensor `sd:"w"`
	B *gpu.Tensor `sd:"b,optional"`
}

type net struct {
	In     block   `sd:"in"`
	Layers []block `sd:"layers"`
	Width  int
}

func TestBind(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := mapSource{rt: rt, m: map[string][]int{
		"m.in.w": {4, 4}, "m.in.b": {4},
		"m.layers.0.w": {4, 4}, "m.layers.1.w": {4, 4}, "m.layers.1.b": {4},
		"m.layers.3.w": {4, 4}, // not consecutive: not a layer
		"m.extra":      {1},
		"other.x":      {1},
	}}
	var n net
	rep, err := Bind(rt, src, "m.", &n)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(n.Layers))
	}
	if n.Layers[0].B != nil || n.Layers[1].B == nil {
		t.Fatal("optional bias bound wrongly")
	}
	if n.In.W.DType() != gpu.F16 || n.In.B.DType() != gpu.F32 {
		t.Fatalf("matrix kept %s, vector became %s; want F16 and F32", n.In.W.DType(), n.In.B.DType())
	}
	if want := []string{"m.extra", "m.layers.3.w"}; !slices.Equal(rep.Unused, want) {
		t.Fatalf("unused %v, want %v", rep.Unused, want)
	}

	delete(src.m, "m.in.w")
	var n2 net
	_, err = Bind(rt, src, "m.", &n2)
	var me *MissingError
	if !errors.As(err, &me) || !slices.Equal(me.Keys, []string{"m.in.w"}) {
		t.Fatalf("err = %v, want missing m.in.w", err)
	}
	if _, err := Bind(rt, src, "m.", n2); err == nil {
		t.Fatal("non-pointer target accepted")
	}
}
