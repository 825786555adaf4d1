package t5

import (
	"encoding/binary"
	"sort"
	"testing"
)

// buildCharsMap writes a precompiled charsmap blob for rules (key → replacement) in
// SentencePiece's layout: a darts-clone double array (each node's children at base ^
// label, its value unit at base ^ 0 with the top bit set) followed by the NUL-terminated
// replacements. It is a plain first-fit builder, enough for a handful of keys.
func buildCharsMap(t testing.TB, rules map[string]string) []byte {
	t.Helper()
	type node struct {
		children map[byte]*node
		value    int // offset of the replacement, −1 for none
	}
	newNode := func() *node { return &node{children: map[byte]*node{}, value: -1} }
	root := newNode()
	var repl []byte
	keys := make([]string, 0, len(rules))
	for k := range rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n := root
		for i := 0; i < len(k); i++ {
			c, ok := n.children[k[i]]
			if !ok {
				c = newNode()
				n.children[k[i]] = c
			}
			n = c
		}
		n.value = len(repl)
		repl = append(append(repl, rules[k]...), 0)
	}
	units := make([]uint32, 1)
	used := map[uint32]bool{0: true}
	grow := func(i uint32) {
		for uint32(len(units)) <= i {
			units = append(units, 0)
		}
	}
	// place puts n's children (and value) at a free base and writes the unit at idx,
	// whose label is label.
	var place func(n *node, idx uint32, label uint32)
	place = func(n *node, idx uint32, label uint32) {
		var labels []uint32
		for c := range n.children {
			labels = append(labels, uint32(c))
		}
		sort.Slice(labels, func(i, j int) bool { return labels[i] < labels[j] })
		base := uint32(1)
		for ; ; base++ {
			ok := !(n.value >= 0 && used[base])
			for _, l := range labels {
				if used[base^l] || base^l == 0 {
					ok = false
				}
			}
			if ok && base != idx {
				break
			}
		}
		offset := idx ^ base
		if offset >= 1<<21 {
			t.Fatal("charsmap builder: offset too large")
		}
		u := offset<<10 | label
		if n.value >= 0 {
			u |= 1 << 8
			grow(base)
			units[base] = uint32(n.value) | 1<<31
			used[base] = true
		}
		grow(idx)
		units[idx] = u
		for _, l := range labels {
			used[base^l] = true
			grow(base ^ l)
		}
		for _, l := range labels {
			place(n.children[byte(l)], base^l, l)
		}
	}
	place(root, 0, 0)
	blob := binary.LittleEndian.AppendUint32(nil, uint32(4*len(units)))
	for _, u := range units {
		blob = binary.LittleEndian.AppendUint32(blob, u)
	}
	return append(blob, repl...)
}

// TestCharsMap: the longest rule that prefixes the text wins, shorter and longer keys
// sharing a path are both found, and bytes off the trie match nothing.
func TestCharsMap(t *testing.T) {
	m, err := parseCharsMap(buildCharsMap(t, map[string]string{
		"\uff41": "a",  // fullwidth a
		"\ufb01": "fi", // ligature
		"\t":     " ",
		"\u200b": "", // zero width space: deleted
		"ab":     "X",
		"abc":    "Y",
	}))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in, repl string
		n        int
		ok       bool
	}{
		{"\uff41bc", "a", 3, true},
		{"\ufb01x", "fi", 3, true},
		{"\tz", " ", 1, true},
		{"\u200bq", "", 3, true},
		{"abd", "X", 2, true},
		{"abcd", "Y", 3, true},
		{"a", "", 0, false},
		{"q", "", 0, false},
		{"", "", 0, false},
	}
	for _, c := range cases {
		r, n, ok := m.longest(c.in)
		if r != c.repl || n != c.n || ok != c.ok {
			t.Errorf("longest(%q) = %q, %d, %v; want %q, %d, %v", c.in, r, n, ok, c.repl, c.n, c.ok)
		}
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, {8, 0, 0, 0, 1, 2, 3, 4}, {6, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7}} {
		if _, err := parseCharsMap(bad); err == nil {
			t.Errorf("blob %v accepted", bad)
		}
	}
	// A trie whose units point anywhere must not panic.
	junk := []byte{16, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x61, 0xfc, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 'x', 0}
	if jm, err := parseCharsMap(junk); err == nil {
		for _, s := range []string{"a", "ab", "\xff\xfe", "zzz"} {
			jm.longest(s)
		}
	}
}
