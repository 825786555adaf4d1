package graph

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// chain builds a prompt from "id: upstream ids" lines (ids may hold ":"); every node has class "X" and
// links named in0, in1, ...
func chain(spec string) Prompt {
	p := Prompt{}
	for _, line := range strings.Split(strings.TrimSpace(spec), "\n") {
		id, ups := strings.TrimSuffix(line, ":"), ""
		if i := strings.LastIndex(line, ": "); i >= 0 {
			id, ups = line[:i], line[i+2:]
		}
		n := &Node{ClassType: "X", Inputs: map[string]any{"lit": "v"}}
		for i, u := range strings.Fields(ups) {
			n.Inputs[fmt.Sprintf("in%d", i)] = NewLink(u, 0)
		}
		p[strings.TrimSpace(id)] = n
	}
	return p
}

func TestOrder(t *testing.T) {
	tests := []struct {
		name    string
		prompt  string
		outputs []string
		want    []string
	}{
		{"chain", "3: 2\n2: 1\n1:", []string{"3"}, []string{"1", "2", "3"}},
		{"unreachable nodes left out", "3: 1\n1:\n2:\n4: 2", []string{"3"}, []string{"1", "3"}},
		{"numeric id order among ready nodes", "10:\n9:\n11: 10 9\n2: 11", []string{"2"}, []string{"9", "10", "11", "2"}},
		{"diamond", "1:\n2: 1\n3: 1\n4: 3 2", []string{"4"}, []string{"1", "2", "3", "4"}},
		{"two outputs share upstream", "1:\n5: 1\n6: 1", []string{"6", "5"}, []string{"1", "5", "6"}},
		{"subgraph ids", "10:2: 10:1\n10:1: 1\n1:\n9: 10:2", []string{"9"}, []string{"1", "10:1", "10:2", "9"}},
		{"links to missing nodes ignored", "2: 1 77\n1:", []string{"2"}, []string{"1", "2"}},
		{"repeated link to one node", "2: 1 1 1\n1:", []string{"2"}, []string{"1", "2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Order(chain(tc.prompt), tc.outputs)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("order = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOrderErrors(t *testing.T) {
	tests := []struct {
		name    string
		prompt  string
		outputs []string
		cycle   []string
		want    string
	}{
		{"self loop", "1: 1\n2: 1", []string{"2"}, []string{"1"}, "cycle between nodes 1"},
		{"three-node cycle", "1: 3\n2: 1\n3: 2\n4: 2\n0:", []string{"4"}, []string{"1", "2", "3"}, "nodes 1, 2, 3"},
		{"unknown output", "1:", []string{"5"}, nil, `output node "5" is not in the prompt`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Order(chain(tc.prompt), tc.outputs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var ce *CycleError
			if tc.cycle != nil && (!errors.As(err, &ce) || !reflect.DeepEqual(ce.Nodes, tc.cycle)) {
				t.Errorf("cycle = %v, want %v", ce, tc.cycle)
			}
		})
	}
	// Two separate cycles are both found by Cycles, in id order.
	p := chain("1: 2\n2: 1\n5: 6\n6: 5\n9: 1 5")
	if got := Cycles(p, []string{"9"}); !reflect.DeepEqual(got, [][]string{{"1", "2"}, {"5", "6"}}) {
		t.Errorf("Cycles = %v", got)
	}
}

// TestOrderLongChain checks that a deep graph neither recurses too deep nor slows down.
func TestOrderLongChain(t *testing.T) {
	var b strings.Builder
	const n = 20000
	b.WriteString("0:\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "%d: %d\n", i, i-1)
	}
	p := chain(b.String())
	got, err := Order(p, []string{fmt.Sprint(n - 1)})
	if err != nil || len(got) != n || got[0] != "0" || got[n-1] != fmt.Sprint(n-1) {
		t.Fatalf("order of a %d-node chain: len %d, err %v", n, len(got), err)
	}
	p["0"].Inputs["back"] = NewLink(fmt.Sprint(n-1), 0)
	if c := Cycles(p, []string{"5"}); len(c) != 1 || len(c[0]) != n {
		t.Errorf("cycle through the whole chain not found: %d cycles", len(c))
	}
}

func TestSortIDs(t *testing.T) {
	ids := []string{"10", "9", "a", "10:2", "10:10", "2", "01", "1", "b:1"}
	SortIDs(ids)
	want := []string{"01", "1", "2", "9", "10", "10:2", "10:10", "a", "b:1"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("SortIDs = %v, want %v", ids, want)
	}
}

func BenchmarkOrder(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("0:\n")
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&sb, "%d: %d %d\n", i, i-1, i/2)
	}
	p := chain(sb.String())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Order(p, []string{"999"}); err != nil {
			b.Fatal(err)
		}
	}
}
