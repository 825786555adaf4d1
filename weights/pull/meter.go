package pull

import "time"

// meter turns byte counts into throttled Progress calls with a smoothed rate.
type meter struct {
	fn        func(Progress)
	name      string
	total     int64
	every     time.Duration
	last      time.Time
	lastBytes int64
	rate      float64
}

func newMeter(name string, offset, total int64, o Options) *meter {
	every := o.ProgressEvery
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	return &meter{fn: o.Progress, name: name, total: total, every: every, last: time.Now(), lastBytes: offset}
}

// update reports done bytes when the interval since the last report has passed. The
// rate is an exponentially weighted average of the per-interval rates (weight 0.3 for
// the newest), so that the ETA follows a changing speed without jumping.
func (m *meter) update(done int64) {
	if m.fn == nil {
		return
	}
	now := time.Now()
	dt := now.Sub(m.last)
	if dt < m.every {
		return
	}
	inst := float64(done-m.lastBytes) / dt.Seconds()
	if m.rate == 0 {
		m.rate = inst
	} else {
		m.rate = 0.7*m.rate + 0.3*inst
	}
	m.last, m.lastBytes = now, done
	eta := time.Duration(-1)
	if m.total > 0 && m.rate > 0 {
		eta = time.Duration(float64(m.total-done) / m.rate * float64(time.Second))
	}
	m.fn(Progress{Name: m.name, Done: done, Total: m.total, Rate: m.rate, ETA: eta})
}
