package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type tag of a metadata value (enum gguf_type in ggml's gguf.h).
type ValueType uint32

const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("value_type(%d)", uint32(t))
}

// scalarSize is the encoded size of a fixed-size value type, 0 for string and array.
func (t ValueType) scalarSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// KV is one metadata pair. Value holds the Go value of the type: uint8, int8, uint16,
// int16, uint32, int32, float32, bool, string, uint64, int64, float64, or Array.
type KV struct {
	Key   string
	Type  ValueType
	Value any
}

// Array is a metadata array. Values is a typed slice matching Elem: []uint8, []int8,
// []uint16, []int16, []uint32, []int32, []float32, []bool, []string, []uint64, []int64,
// []float64, or []Array for nested arrays.
type Array struct {
	Elem   ValueType
	Values any
}

// Len returns the number of elements.
func (a Array) Len() int {
	switch v := a.Values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []Array:
		return len(v)
	}
	return 0
}

// Metadata is the ordered list of a file's key/value pairs with typed getters.
type Metadata []KV

// Get returns the pair with the given key.
func (m Metadata) Get(key string) (KV, bool) {
	for _, kv := range m {
		if kv.Key == key {
			return kv, true
		}
	}
	return KV{}, false
}

// String returns a string value.
func (m Metadata) String(key string) (string, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return "", false
	}
	s, ok := kv.Value.(string)
	return s, ok
}

// Uint returns an unsigned or non-negative signed integer value of any width.
func (m Metadata) Uint(key string) (uint64, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8, int16, int32, int64:
		i, _ := m.Int(key)
		if i >= 0 {
			return uint64(i), true
		}
	}
	return 0, false
}

// Int returns a signed or unsigned integer value that fits an int64.
func (m Metadata) Int(key string) (int64, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case uint8, uint16, uint32, uint64:
		u, _ := m.Uint(key)
		if u <= math.MaxInt64 {
			return int64(u), true
		}
	}
	return 0, false
}

// Float returns a float or integer value as float64.
func (m Metadata) Float(key string) (float64, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	if i, ok := m.Int(key); ok {
		return float64(i), true
	}
	return 0, false
}

// Array returns an array value.
func (m Metadata) Array(key string) (Array, bool) {
	kv, ok := m.Get(key)
	if !ok {
		return Array{}, false
	}
	a, ok := kv.Value.(Array)
	return a, ok
}
