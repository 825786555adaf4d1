package t5

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// charsMap is SentencePiece's precompiled normalization map (the nmt_nfkc rules T5 was
// trained with): a darts-clone double-array trie over UTF-8 byte strings whose values
// are offsets of NUL-terminated replacement strings. The blob is the trie's size in bytes
// (uint32, little-endian), the trie's 32-bit units, then the replacement strings
// (normalizer.cc DecodePrecompiledCharsMap).
type charsMap struct {
	units       []uint32
	replacement []byte
}

func parseCharsMap(blob []byte) (*charsMap, error) {
	if len(blob) <= 4 {
		return nil, errors.New("t5: precompiled charsmap is too short")
	}
	size := binary.LittleEndian.Uint32(blob)
	if uint64(size) >= uint64(len(blob)-4)+1 || size%4 != 0 || size == 0 {
		return nil, fmt.Errorf("t5: precompiled charsmap: trie of %d bytes in a %d-byte blob", size, len(blob))
	}
	m := &charsMap{units: make([]uint32, size/4), replacement: blob[4+size:]}
	for i := range m.units {
		m.units[i] = binary.LittleEndian.Uint32(blob[4+4*i:])
	}
	return m, nil
}

// The fields of a darts-clone unit (darts.h DoubleArrayUnit).
func unitHasLeaf(u uint32) bool  { return u>>8&1 == 1 }
func unitValue(u uint32) int     { return int(u & (1<<31 - 1)) }
func unitLabel(u uint32) uint32  { return u & (1<<31 | 0xff) }
func unitOffset(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }

// longest returns the replacement of the longest key that prefixes s and that key's
// length in bytes; ok is false when no key does (commonPrefixSearch, keeping the longest
// as Normalizer::NormalizePrefix does). A malformed trie ends the search, never panics.
func (m *charsMap) longest(s string) (repl string, n int, ok bool) {
	if len(m.units) == 0 {
		return "", 0, false
	}
	pos := unitOffset(m.units[0])
	value := -1
	for i := 0; i < len(s); i++ {
		pos ^= uint32(s[i])
		if int(pos) >= len(m.units) {
			break
		}
		u := m.units[pos]
		if unitLabel(u) != uint32(s[i]) {
			break
		}
		pos ^= unitOffset(u)
		if unitHasLeaf(u) {
			if int(pos) >= len(m.units) {
				break
			}
			value, n = unitValue(m.units[pos]), i+1
		}
	}
	if value < 0 || value >= len(m.replacement) {
		return "", 0, false
	}
	r := m.replacement[value:]
	if end := bytes.IndexByte(r, 0); end >= 0 {
		r = r[:end]
	}
	return string(r), n, true
}
