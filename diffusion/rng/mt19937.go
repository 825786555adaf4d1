package rng

// The mt19937 parameters (Matsumoto & Nishimura 1998), as std::mt19937 and PyTorch's
// at::mt19937 use them.
const (
	mtN         = 624
	mtM         = 397
	mtMatrixA   = 0x9908b0df
	mtUpperMask = 0x80000000
	mtLowerMask = 0x7fffffff
)

// mt19937 is the 32-bit Mersenne Twister.
type mt19937 struct {
	state [mtN]uint32
	left  int // words of state not yet tempered and returned
	next  int
}

// seed initialises the state the way PyTorch's at::mt19937 does (the standard
// init_genrand recurrence on the low 32 bits of the seed).
func (m *mt19937) seed(s uint32) {
	m.state[0] = s
	for j := 1; j < mtN; j++ {
		prev := m.state[j-1]
		m.state[j] = 1812433253*(prev^(prev>>30)) + uint32(j)
	}
	m.left = 1
	m.next = 0
}

// twist regenerates the whole state block.
func (m *mt19937) twist() {
	s := &m.state
	for i := 0; i < mtN; i++ {
		y := (s[i] & mtUpperMask) | (s[(i+1)%mtN] & mtLowerMask)
		v := s[(i+mtM)%mtN] ^ (y >> 1)
		if y&1 != 0 {
			v ^= mtMatrixA
		}
		s[i] = v
	}
	m.left = mtN
	m.next = 0
}

// uint32 returns the next tempered output.
func (m *mt19937) uint32() uint32 {
	m.left--
	if m.left == 0 {
		m.twist()
	}
	y := m.state[m.next]
	m.next++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}
