package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/forgeflow/forgeflow/graph"
)

// maxObjectInfo bounds an /object_info document read from a file or a server (a
// ComfyUI with many custom node packs answers a few tens of MB).
const maxObjectInfo = 256 << 20

// objectInfoTimeout bounds fetching it from a server.
const objectInfoTimeout = 2 * time.Minute

// objectInfoUsage is the help of --object-info, shared by convert, validate and run.
const objectInfoUsage = "another server's node schemas: a saved /object_info JSON `FILE`, or a URL (http://host:8188 or its /object_info; ?token=... for a forgeflow with --auth-token)"

// loadObjectInfo reads node schemas from a file or a server. A URL without a path
// (or ending in /api) gets /object_info appended.
func loadObjectInfo(ctx context.Context, src string) (graph.SchemaSet, error) {
	var data []byte
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		u, err := url.Parse(src)
		if err != nil {
			return nil, fmt.Errorf("--object-info %s: %w", src, err)
		}
		if p := strings.TrimSuffix(u.Path, "/"); p == "" || p == "/api" {
			u.Path = p + "/object_info"
		}
		ctx, cancel := context.WithTimeout(ctx, objectInfoTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("--object-info %s: %w", u.Redacted(), err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("--object-info: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("--object-info %s: HTTP %d %s", u.Redacted(), resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		if data, err = readLimited(resp.Body, maxObjectInfo); err != nil {
			return nil, fmt.Errorf("--object-info %s: %w", u.Redacted(), err)
		}
	} else {
		f, err := os.Open(src)
		if err != nil {
			return nil, fmt.Errorf("--object-info: %w", err)
		}
		defer f.Close()
		if data, err = readLimited(f, maxObjectInfo); err != nil {
			return nil, fmt.Errorf("--object-info %s: %w", src, err)
		}
	}
	set, err := graph.SchemasFromObjectInfo(data)
	if err != nil {
		return nil, fmt.Errorf("--object-info %s: %w", src, err)
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("--object-info %s: no node schemas in it", src)
	}
	return set, nil
}

// readLimited reads r to its end, failing beyond limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d MB", limit>>20)
	}
	return b, nil
}
