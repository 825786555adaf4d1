package graph

import (
	"sort"
	"strconv"
	"strings"
)

// SortedIDs returns the prompt's node ids in a stable, human order: ids compared part by
// part (split at ":"), numerically where both parts are integers.
func SortedIDs(p Prompt) []string {
	ids := make([]string, 0, len(p))
	for id := range p {
		ids = append(ids, id)
	}
	SortIDs(ids)
	return ids
}

// SortIDs sorts node ids as SortedIDs does.
func SortIDs(ids []string) {
	sort.Slice(ids, func(i, j int) bool { return lessID(ids[i], ids[j]) })
}

func lessID(a, b string) bool {
	pa, pb := strings.Split(a, ":"), strings.Split(b, ":")
	for k := 0; k < len(pa) && k < len(pb); k++ {
		if pa[k] == pb[k] {
			continue
		}
		na, ea := strconv.ParseInt(pa[k], 10, 64)
		nb, eb := strconv.ParseInt(pb[k], 10, 64)
		switch {
		case ea == nil && eb == nil:
			if na != nb {
				return na < nb
			}
			return pa[k] < pb[k] // "01" vs "1"
		case ea == nil:
			return true // numbers before names
		case eb == nil:
			return false
		default:
			return pa[k] < pb[k]
		}
	}
	return len(pa) < len(pb)
}
