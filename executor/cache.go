package executor

import "errors"

type outputCache struct{}

func newOutputCache(o CacheOptions) (*outputCache, error) {
	if o.Mode == CacheLRU && o.LRUSize <= 0 {
		return nil, errors.New("executor: cache: LRU size must be positive")
	}
	return &outputCache{}, nil
}

func (c *outputCache) clear() {}
