package builtin

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/nodes"
)

// TestMissingEmbeddingWarns: a prompt naming a textual-inversion embedding that no
// embeddings folder holds encodes without it and logs a warning naming it, as ComfyUI
// does ("embedding:… does not exist, ignoring"), to the logger of the run that loaded
// the checkpoint.
func TestMissingEmbeddingWarns(t *testing.T) {
	m := newSDModels(t, true)
	if err := os.MkdirAll(filepath.Join(m.base, "models", "embeddings"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := newTestRegistry(t, m.opts)
	var logs bytes.Buffer
	env := &nodes.Env{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	out, err := nodeRun(t, r, env, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	if err != nil {
		t.Fatal(err)
	}
	clipv := out[1].(*sd.CLIP)
	if _, err := nodeRun(t, r, nil, "CLIPTextEncode", nodes.Inputs{"text": "a photo of embedding:nowhere_to_be_found a cat", "clip": clipv}); err != nil {
		t.Fatal(err)
	}
	if s := logs.String(); !strings.Contains(s, "embedding does not exist") || !strings.Contains(s, "nowhere_to_be_found") {
		t.Fatalf("no warning for the missing embedding; log:\n%s", s)
	}
}
