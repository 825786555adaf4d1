package gemm

// cpuid executes CPUID with EAX = leaf and ECX = sub.
func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// cpuidCaches reads the data caches from CPUID: the deterministic cache
// parameters (leaf 4 on Intel, 0x8000001D on AMD, the same layout), else
// AMD's older 0x80000005 (L1d) and 0x80000006 (L2, L3 without a sharing
// count). Fields CPUID does not answer stay zero; hypervisors often blank
// the deterministic leaves, as this project's Firecracker VMs do.
func cpuidCaches() Caches {
	maxStd, _, _, _ := cpuid(0, 0)
	maxExt, _, _, _ := cpuid(0x80000000, 0)
	var c Caches
	if maxStd >= 4 {
		c = cacheLeaf(4)
	}
	if c.L1D == 0 && c.L2 == 0 && maxExt >= 0x8000001D {
		c = cacheLeaf(0x8000001D)
	}
	if maxExt >= 0x80000006 {
		legacy := Caches{}
		if maxExt >= 0x80000005 {
			_, _, ecx, _ := cpuid(0x80000005, 0)
			legacy.L1D = int(ecx>>24) << 10 // ECX[31:24]: L1d KiB (AMD; Intel reserves it as 0)
		}
		_, _, ecx, edx := cpuid(0x80000006, 0)
		legacy.L2 = int(ecx>>16) << 10       // ECX[31:16]: L2 KiB
		legacy.L3 = int(edx>>18) * 512 << 10 // EDX[31:18]: L3 in 512 KiB units (AMD)
		if legacy.L1D > 0 || legacy.L2 > 0 || legacy.L3 > 0 {
			legacy.Source = "cpuid"
		}
		c = c.merge(legacy)
	}
	return c
}

// cacheLeaf walks the sub-leaves of a deterministic cache parameter leaf
// (Intel SDM vol. 2A, CPUID leaf 04H; AMD APM vol. 3, Fn8000_001D): type in
// EAX[4:0] (0 ends the list, 1 data, 3 unified), level in EAX[7:5], the
// logical processors sharing it in EAX[25:14]+1, and the size as ways ×
// partitions × line × sets from EBX and ECX. The L3 sharing count is
// turned into cores with the L1d's (the SMT threads of one core).
func cacheLeaf(leaf uint32) Caches {
	var c Caches
	l1Sharing := 1
	for sub := uint32(0); sub < 16; sub++ {
		a, b, cx, _ := cpuid(leaf, sub)
		typ := a & 31
		if typ == 0 {
			break
		}
		if typ != 1 && typ != 3 {
			continue
		}
		size := int(b>>22+1) * int(b>>12&0x3ff+1) * int(b&0xfff+1) * int(cx+1)
		sharing := int(a>>14&0xfff) + 1
		switch a >> 5 & 7 {
		case 1:
			c.L1D, l1Sharing = size, sharing
		case 2:
			c.L2 = size
		case 3:
			c.L3, c.L3Sharing = size, sharing
		}
	}
	if c.L3Sharing > 0 && l1Sharing > 1 {
		c.L3Sharing = max(1, c.L3Sharing/l1Sharing)
	}
	if c.L1D > 0 || c.L2 > 0 || c.L3 > 0 {
		c.Source = "cpuid"
	}
	return c
}
