package memory

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SystemRAM is what the operating system says about RAM, in bytes.
type SystemRAM struct {
	Total     int64
	Available int64 // MemAvailable: what can be allocated without swapping
}

// ReadMeminfo reads total and available RAM from a Linux /proc/meminfo style file.
// Older kernels without MemAvailable get MemFree + Buffers + Cached as an estimate.
func ReadMeminfo(path string) (SystemRAM, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SystemRAM{}, fmt.Errorf("memory: %w", err)
	}
	return parseMeminfo(data, path)
}

func parseMeminfo(data []byte, path string) (SystemRAM, error) {
	vals := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || n < 0 {
			return SystemRAM{}, fmt.Errorf("memory: %s line %d: bad value %q for %s", path, line, fields[0], key)
		}
		mult := int64(1)
		if len(fields) > 1 && strings.EqualFold(fields[1], "kB") {
			mult = 1024
		}
		vals[key] = n * mult
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return SystemRAM{}, fmt.Errorf("memory: %s: no MemTotal", path)
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		avail = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return SystemRAM{Total: total, Available: min(avail, total)}, nil
}
