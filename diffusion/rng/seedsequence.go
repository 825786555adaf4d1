package rng

// SeedSequence reproduces numpy.random.SeedSequence's entropy pool and generate_state,
// which torchsde's Brownian tree uses to derive one seed per tree node. Re-derived from
// NEP 19 and numpy's bit_generator.pyx description (hashmix / mix over a pool of 32-bit
// words); never copied.
type SeedSequence struct {
	pool []uint32
}

const (
	ssInitA    = 0x43b0d7e5
	ssMultA    = 0x931e8875
	ssInitB    = 0x8b51f9dd
	ssMultB    = 0x58f38ded
	ssMixMultL = 0xca01f9dd
	ssMixMultR = 0x4973f715
	ssXShift   = 16
)

// NewSeedSequence builds the pool for an entropy value, an optional spawn key and a pool
// size (numpy's default is 4; torchsde uses 24).
func NewSeedSequence(entropy uint64, spawnKey []uint64, poolSize int) *SeedSequence {
	run := uint32Words(entropy)
	var spawn []uint32
	for _, k := range spawnKey {
		spawn = append(spawn, uint32Words(k)...)
	}
	if len(spawn) > 0 && len(run) < poolSize {
		run = append(run, make([]uint32, poolSize-len(run))...)
	}
	data := append(run, spawn...)

	pool := make([]uint32, poolSize)
	hashConst := uint32(ssInitA)
	hashmix := func(v uint32) uint32 {
		v ^= hashConst
		hashConst *= ssMultA
		v *= hashConst
		v ^= v >> ssXShift
		return v
	}
	mix := func(x, y uint32) uint32 {
		r := ssMixMultL*x - ssMixMultR*y
		return r ^ r>>ssXShift
	}
	for i := range pool {
		var v uint32
		if i < len(data) {
			v = data[i]
		}
		pool[i] = hashmix(v)
	}
	for src := range pool {
		for dst := range pool {
			if src != dst {
				pool[dst] = mix(pool[dst], hashmix(pool[src]))
			}
		}
	}
	for src := len(pool); src < len(data); src++ {
		for dst := range pool {
			pool[dst] = mix(pool[dst], hashmix(data[src]))
		}
	}
	return &SeedSequence{pool: pool}
}

// uint32Words splits an integer into 32-bit words, least significant first; 0 is one
// zero word (numpy's _coerce_to_uint32_array).
func uint32Words(v uint64) []uint32 {
	if v>>32 == 0 {
		return []uint32{uint32(v)}
	}
	return []uint32{uint32(v), uint32(v >> 32)}
}

// GenerateState returns n 32-bit words drawn from the pool (generate_state(n, uint32)).
func (s *SeedSequence) GenerateState(n int) []uint32 {
	out := make([]uint32, n)
	hashConst := uint32(ssInitB)
	for i := range out {
		v := s.pool[i%len(s.pool)]
		v ^= hashConst
		hashConst *= ssMultB
		v *= hashConst
		v ^= v >> ssXShift
		out[i] = v
	}
	return out
}
