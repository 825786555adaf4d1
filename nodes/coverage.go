package nodes

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Coverage says which of a list of ComfyUI node classes a registry implements; it backs
// `forgeflow nodes --coverage`.
type Coverage struct {
	Present []string // classes registered here, sorted
	Missing []string // classes not registered here, sorted
	// Extra are classes registered here that the list does not name (forgeflow's own, or
	// newer than the list), sorted.
	Extra []string
}

// Total is the number of classes in the list compared against.
func (c Coverage) Total() int { return len(c.Present) + len(c.Missing) }

// Percent is the share of listed classes present, 0..100 (0 for an empty list).
func (c Coverage) Percent() float64 {
	if c.Total() == 0 {
		return 0
	}
	return 100 * float64(len(c.Present)) / float64(c.Total())
}

// CheckCoverage compares the registry with a list of ComfyUI class names. Duplicates and
// empty names in the list are ignored.
func CheckCoverage(r *Registry, classes []string) Coverage {
	want := map[string]bool{}
	for _, c := range classes {
		if c != "" {
			want[c] = true
		}
	}
	cov := Coverage{Present: []string{}, Missing: []string{}, Extra: []string{}}
	for c := range want {
		if _, err := r.Lookup(c); err == nil {
			cov.Present = append(cov.Present, c)
		} else {
			cov.Missing = append(cov.Missing, c)
		}
	}
	for _, name := range r.Names() {
		if !want[name] {
			cov.Extra = append(cov.Extra, name)
		}
	}
	sort.Strings(cov.Present)
	sort.Strings(cov.Missing)
	return cov
}

// ObjectInfoClasses returns the class names of an /object_info document (ComfyUI's
// GET /object_info body: an object keyed by class name), sorted.
func ObjectInfoClasses(data []byte) ([]string, error) {
	var info map[string]json.RawMessage
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("nodes: object_info: %w", err)
	}
	names := make([]string, 0, len(info))
	for k := range info {
		names = append(names, k)
	}
	sort.Strings(names)
	return names, nil
}
