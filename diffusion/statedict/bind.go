package statedict

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/gpu"
)

// Source gives checkpoint tensors by full key.
type Source interface {
	// Keys lists every tensor key.
	Keys() []string
	// Tensor returns the tensor stored under key, in its stored dtype.
	Tensor(key string) (*gpu.Tensor, error)
}

// Report lists what a Bind left unmatched: required keys the source lacks (Bind fails if
// any) and source keys under the prefix that no field used.
type Report struct {
	Missing []string
	Unused  []string
}

// MissingError is returned when required keys are absent.
type MissingError struct {
	Prefix string
	Keys   []string
}

func (e *MissingError) Error() string {
	shown := e.Keys
	if len(shown) > 8 {
		shown = shown[:8]
	}
	return fmt.Sprintf("statedict: %d tensors missing under %q: %s", len(e.Keys), e.Prefix, strings.Join(shown, ", "))
}

var tensorType = reflect.TypeOf((*gpu.Tensor)(nil))

// Keyed is implemented by structs that keep the key prefix Bind fills them from:
// diffusion/nn's layers record it, so that weight patches (LoRA) can address a layer by
// its state-dict key. Bind calls BoundAt(prefix) on the target and on every nested
// struct it binds, before their fields.
type Keyed interface {
	BoundAt(prefix string)
}

// Bind fills the struct dst points to from src, keys relative to prefix ("" or ending in
// "."). Tags:
//
//	`sd:"name"`           a *gpu.Tensor at prefix+name (required)
//	`sd:"name,optional"`  the same, nil when absent
//	`sd:"name"` on a struct field: its fields live under prefix+name+"."; with
//	                     ",optional" the struct stays zero when no key lies there
//	`sd:"name"` on a slice of structs: elements at prefix+name+".0.", ".1.", … as many as
//	                     the source holds consecutively from 0
//
// Fields without a tag are left alone (hyper-parameters). rt converts 1-D tensors to F32.
// A struct implementing Keyed learns the prefix it was bound at.
func Bind(rt *gpu.Runtime, src Source, prefix string, dst any) (*Report, error) {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, errors.New("statedict: bind target must be a pointer to a struct")
	}
	keys := map[string]bool{}
	for _, k := range src.Keys() {
		if strings.HasPrefix(k, prefix) {
			keys[k] = false
		}
	}
	b := &binder{rt: rt, src: src, keys: keys}
	if err := b.bindStruct(v.Elem(), prefix); err != nil {
		return nil, err
	}
	rep := &Report{Missing: b.missing}
	for k, used := range keys {
		if !used {
			rep.Unused = append(rep.Unused, k)
		}
	}
	sort.Strings(rep.Unused)
	if len(b.missing) > 0 {
		return rep, &MissingError{Prefix: prefix, Keys: b.missing}
	}
	return rep, nil
}

type binder struct {
	rt      *gpu.Runtime
	src     Source
	keys    map[string]bool
	missing []string
}

func (b *binder) bindStruct(v reflect.Value, prefix string) error {
	if v.CanAddr() {
		if k, ok := v.Addr().Interface().(Keyed); ok {
			k.BoundAt(prefix)
		}
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("sd")
		if !ok || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		optional := opts == "optional"
		fv := v.Field(i)
		switch {
		case f.Type == tensorType:
			key := prefix + name
			if _, ok := b.keys[key]; !ok {
				if !optional {
					b.missing = append(b.missing, key)
				}
				continue
			}
			tn, err := b.load(key)
			if err != nil {
				return err
			}
			fv.Set(reflect.ValueOf(tn))
		case f.Type.Kind() == reflect.Struct:
			if optional && !b.hasPrefix(prefix+name+".") {
				continue
			}
			if err := b.bindStruct(fv, prefix+name+"."); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			n := b.count(prefix + name + ".")
			s := reflect.MakeSlice(f.Type, n, n)
			for j := 0; j < n; j++ {
				if err := b.bindStruct(s.Index(j), prefix+name+"."+strconv.Itoa(j)+"."); err != nil {
					return err
				}
			}
			fv.Set(s)
		default:
			return fmt.Errorf("statedict: field %s.%s: unsupported type %s for an sd tag", t.Name(), f.Name, f.Type)
		}
	}
	return nil
}

// hasPrefix reports whether any key lies under prefix.
func (b *binder) hasPrefix(prefix string) bool {
	for k := range b.keys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// count returns how many consecutive indices 0, 1, … have keys under prefix.
func (b *binder) count(prefix string) int {
	seen := map[int]bool{}
	for k := range b.keys {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		idx, _, ok := strings.Cut(rest, ".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(idx); err == nil && n >= 0 {
			seen[n] = true
		}
	}
	n := 0
	for seen[n] {
		n++
	}
	return n
}

func (b *binder) load(key string) (*gpu.Tensor, error) {
	b.keys[key] = true
	t, err := b.src.Tensor(key)
	if err != nil {
		return nil, fmt.Errorf("statedict: %s: %w", key, err)
	}
	if t.Rank() == 1 && t.DType() != gpu.F32 {
		c, err := gpu.Cast(b.rt, t, gpu.F32)
		if err != nil {
			return nil, fmt.Errorf("statedict: %s: %w", key, err)
		}
		t.Release()
		t = c
	}
	return t, nil
}
