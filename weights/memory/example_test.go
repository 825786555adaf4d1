package memory_test

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/weights/memory"
)

func Example() {
	m := memory.New(memory.Options{RAMBudget: 100})
	loads := 0
	loader := func(name string, bytes int64) memory.Loader {
		return func(ctx context.Context) (memory.Loaded, error) {
			loads++
			return memory.Loaded{Value: name, Bytes: bytes}, nil
		}
	}
	id := func(name string) memory.Identity { return memory.Identity{Path: "/models/" + name, Size: 60} }
	ctx := context.Background()

	h, _ := m.Load(ctx, id("a"), loader("a", 60))
	h.Release()
	h, _ = m.Load(ctx, id("a"), loader("a", 60)) // cached: no second load
	h.Release()
	h, _ = m.Load(ctx, id("b"), loader("b", 60)) // 120 > 100: "a" is evicted
	defer h.Release()
	st := m.Stats()
	fmt.Println(loads, st.ModelRAM, st.Models[0].Path)
	// Output: 2 60 /models/b
}
