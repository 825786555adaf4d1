package gemm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Caches describes the data caches one core sees, in bytes. Zero means
// unknown. L3 is the whole cache and L3Sharing the cores that share it
// (0: unknown), so that L3PerCore can take this core's slice.
type Caches struct {
	L1D, L2, L3 int
	L3Sharing   int
	Source      string // where the figures came from: "cpuid", "sysfs", "defaults" or a mix
}

// The sizes assumed where neither CPUID nor sysfs answers: a 2017–2020
// server core (Skylake-SP, Zen 2) has 32 KiB L1d, 1 MiB (Intel) or 512 KiB
// (AMD) L2 and 1.375–4 MiB of L3 per core; these values lean to the small
// side, where blocking costs a little speed instead of spilling.
const (
	defaultL1D       = 32 << 10
	defaultL2        = 1 << 20
	defaultL3PerCore = 2 << 20
	// maxL3PerCore bounds the L3 slice counted as this core's: the largest
	// of current x86 server parts (Zen 4/5: 32 MiB per 8-core complex).
	// A VM often sees the L3 of the whole package (AMD's 0x80000006 then
	// reports hundreds of MiB) or only its own few vCPUs sharing it, and
	// the other tenants' cores use the rest.
	maxL3PerCore = 4 << 20
)

// L3PerCore is this core's share of the L3: L3/L3Sharing, with the
// default where L3 is unknown and never more than maxL3PerCore.
func (c Caches) L3PerCore() int {
	if c.L3 <= 0 {
		return defaultL3PerCore
	}
	s := c.L3
	if c.L3Sharing > 1 {
		s /= c.L3Sharing
	}
	return min(s, maxL3PerCore)
}

// merge fills c's unknown fields from o, naming both sources.
func (c Caches) merge(o Caches) Caches {
	used := false
	if c.L1D <= 0 && o.L1D > 0 {
		c.L1D, used = o.L1D, true
	}
	if c.L2 <= 0 && o.L2 > 0 {
		c.L2, used = o.L2, true
	}
	if c.L3 <= 0 && o.L3 > 0 {
		c.L3, c.L3Sharing, used = o.L3, o.L3Sharing, true
	} else if c.L3 == o.L3 && c.L3Sharing <= 0 && o.L3Sharing > 0 {
		c.L3Sharing, used = o.L3Sharing, true
	}
	if used {
		if c.Source == "" {
			c.Source = o.Source
		} else {
			c.Source += "+" + o.Source
		}
	}
	return c
}

// withDefaults fills an unknown L1d or L2 with the defaults above; an unknown
// L3 stays zero and L3PerCore takes its default.
func (c Caches) withDefaults() Caches {
	return c.merge(Caches{L1D: defaultL1D, L2: defaultL2, Source: "defaults"})
}

// detectedCaches is this machine's caches, read once per process (CPUID
// and sysfs do not change while it runs).
var detectedCaches = sync.OnceValue(func() Caches {
	return cpuidCaches().merge(sysfsCaches("/sys/devices/system/cpu/cpu0/cache")).withDefaults()
})

// DetectCaches returns this machine's data-cache sizes: CPUID (leaf 4 on
// Intel, 0x8000001D on AMD, else AMD's 0x80000005/0x80000006) on amd64,
// then Linux's sysfs for what CPUID left unknown, then defaults.
func DetectCaches() Caches { return detectedCaches() }

// sysfsCaches reads Linux's cache description under dir
// (index*/{level,type,size,shared_cpu_list}); a missing or unreadable
// entry leaves its field zero.
func sysfsCaches(dir string) Caches {
	entries, _ := filepath.Glob(filepath.Join(dir, "index*"))
	var c Caches
	for _, e := range entries {
		read := func(name string) string {
			b, err := os.ReadFile(filepath.Join(e, name))
			if err != nil {
				return ""
			}
			return strings.TrimSpace(string(b))
		}
		typ := read("type")
		if typ != "Data" && typ != "Unified" {
			continue
		}
		size := parseCacheSize(read("size"))
		if size <= 0 {
			continue
		}
		switch read("level") {
		case "1":
			c.L1D = size
		case "2":
			c.L2 = size
		case "3":
			c.L3, c.L3Sharing = size, countCPUs(read("shared_cpu_list"))
		}
	}
	if c.L1D > 0 || c.L2 > 0 || c.L3 > 0 {
		c.Source = "sysfs"
	}
	return c
}

// parseCacheSize reads sysfs's "48K", "1024K", "32M" (or plain bytes).
func parseCacheSize(s string) int {
	mul := 1
	switch {
	case strings.HasSuffix(s, "K"):
		mul, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mul, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mul, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 1<<40/mul {
		return 0
	}
	return n * mul
}

// countCPUs counts the CPUs of a sysfs CPU list ("0-7,16-23"); 0 where it
// cannot be read.
func countCPUs(list string) int {
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0
			}
		}
		n += b - a + 1
	}
	return n
}

// deriveBlocking sizes the cache blocking of an mr×nr micro-kernel whose
// packed weight panels hold panelBytes per element (2 for 16-bit panels, 4
// for float32) from the caches c (with unknown fields already defaulted).
// The loops keep one operand's sliver in L1 and stream the other's
// (codex/gemm.md, "Blocking"):
//
//   - KC: the unpacked path (macro: ir outer) keeps an A sliver, mr·KC
//     floats, in L1 while B slivers stream past it; the packed-weight path
//     (macroPacked: jr outer) keeps a B sliver, nr·KC panel elements. Each
//     gets about half of L1d, the other half holding the streamed lines and
//     the prefetches in flight, so KC is the smaller of the two, rounded
//     down to a multiple of 32.
//   - MC: the packed A block, MC·KC floats, takes about a quarter of L2. In
//     the packed path it is re-read for every B sliver and must stay in L2;
//     in the unpacked path the B block is the operand re-read (once per A
//     sliver), and it needs the rest of L2. Rounded down to a multiple of mr.
//   - NC: the B block, KC·NC floats, takes half of this core's L3 slice,
//     from which it streams into L2; a larger NC packs A less often.
//     Rounded down to a multiple of 4·nr.
//
// Each is clamped to a range where the loops stay efficient whatever the
// caches report.
func deriveBlocking(mr, nr, panelBytes int, c Caches) Blocking {
	kc := min(c.L1D/2/(4*mr), c.L1D/2/(panelBytes*nr))
	kc = clampDown(kc, 32, 64, 1024)
	mc := clampDown(c.L2/4/(4*kc), mr, 2*mr, 64*mr)
	nc := clampDown(c.L3PerCore()/2/(4*kc), 4*nr, 8*nr, 256*nr)
	return Blocking{KC: kc, MC: mc, NC: nc}
}

// clampDown rounds v down to a multiple of step and clamps it to [lo, hi]
// (both multiples of step).
func clampDown(v, step, lo, hi int) int {
	return max(lo, min(hi, v/step*step))
}
