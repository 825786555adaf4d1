package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/weights/pull"
	"github.com/forgeflow/forgeflow/weights/pull/pulltest"
)

func TestModelsPull(t *testing.T) {
	h := pulltest.New(t)
	lora := pulltest.Safetensors(t, 200<<10, 1)
	h.Add("style.safetensors", pulltest.File{Data: lora})
	h.Add("cut.safetensors", pulltest.File{Data: lora, CutAfter: 50 << 10, CutTimes: 1})
	h.Add("old.ckpt", pulltest.File{Data: []byte("PK\x03\x04 pickle inside")})
	base := t.TempDir()
	bd := []string{"--base-directory", base, "--plain"}
	pullCLI := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, context.Background(), append(append([]string{"models", "pull"}, args...), bd...)...)
	}

	code, out, errOut := pullCLI(h.URL+"/files/style.safetensors", "--folder", "loras", "--sha256", pulltest.SHA256(lora))
	want := filepath.Join(base, "models", "loras", "style.safetensors")
	if code != exitOK || !strings.Contains(out, "saved "+want) || !strings.Contains(out, "verified") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if b, _ := os.ReadFile(want); !bytes.Equal(b, lora) {
		t.Fatal("the lora differs")
	}
	// The folder lists it at once.
	if code, out, _ := runCLI(t, context.Background(), "models", "loras", "--base-directory", base); code != exitOK || strings.TrimSpace(out) != "style.safetensors" {
		t.Fatalf("models loras: %q", out)
	}

	// hf: through a mirror (the test host), verified by the digest the host serves.
	code, out, errOut = pullCLI("hf:someone/repo@v2/style.safetensors", "--hf-endpoint", h.URL, "--name", "renamed.safetensors")
	if code != exitOK || !strings.Contains(out, filepath.Join(base, "models", "checkpoints", "renamed.safetensors")) || !strings.Contains(out, "verified") {
		t.Fatalf("hf: exit %d\n%s%s", code, out, errOut)
	}
	reqs := h.Requests()
	if p := reqs[len(reqs)-2].URL.Path; p != "/someone/repo/resolve/v2/style.safetensors" {
		t.Fatalf("hf: asked for %s", p)
	}

	// A transfer cut short is resumed.
	code, out, errOut = pullCLI(h.URL+"/files/cut.safetensors", "--folder", "vae")
	if code != exitOK {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	reqs = h.Requests()
	if got := reqs[len(reqs)-1].Header.Get("Range"); got != "bytes=51200-" {
		t.Fatalf("the retry asked for %q", got)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"404", []string{h.URL + "/files/none.safetensors"}, "HTTP 404"},
		{"wrong digest", []string{h.URL + "/files/style.safetensors", "--name", "x.safetensors", "--sha256", strings.Repeat("0", 64)}, "checksum mismatch"},
		{"pickle", []string{h.URL + "/files/old.ckpt"}, "pickle-based model file refused"},
		{"unknown folder", []string{h.URL + "/files/style.safetensors", "--folder", "nonsense"}, `unknown model folder "nonsense"`},
		{"custom_nodes", []string{h.URL + "/files/style.safetensors", "--folder", "custom_nodes"}, `unknown model folder "custom_nodes"`},
		{"plain http elsewhere", []string{"http://example.com/a.safetensors"}, "only https"},
		{"not a source", []string{"dreamshaper"}, "starter model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := pullCLI(tc.args...)
			if code != exitFailed || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q (out %q), want %q", code, errOut, out, tc.want)
			}
		})
	}
	if code, _, errOut := pullCLI(h.URL+"/files/old.ckpt", "--allow-pickle", "--folder", "upscale_models"); code != exitOK {
		t.Fatalf("--allow-pickle: %s", errOut)
	}
	if code, _, _ := pullCLI(); code != exitUsage {
		t.Fatal("no SOURCE is a usage error")
	}
	if code, _, _ := pullCLI("a", "b", "--sha256", strings.Repeat("0", 64)); code != exitUsage {
		t.Fatal("--sha256 with two sources is a usage error")
	}
}

// From an empty base directory to a checkpoint the default graph validates with: one
// `models pull sd15` fetches the checkpoint and the CLIP tokenizer, and `tokenizers`
// fetches both tokenizers where the loaders look for them.
func TestModelsPullStarterAndTokenizers(t *testing.T) {
	h := pulltest.New(t)
	st, _ := pull.FindStarter("sd15")
	ckpt := pulltest.Safetensors(t, 64<<10, 2)
	h.Add(filepath.Base(st.Files[0].Source), pulltest.File{Data: ckpt})
	h.Add("vocab.json", pulltest.File{Data: []byte(`{"a</w>": 0}`)})
	h.Add("merges.txt", pulltest.File{Data: []byte("#version: 0.2\n")})
	h.Add("spiece.model", pulltest.File{Data: []byte("\x0a\x05hello")})
	base := t.TempDir()
	code, out, errOut := runCLI(t, context.Background(), "models", "pull", "sd15", "--hf-endpoint", h.URL, "--base-directory", base)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, f := range []string{"models/checkpoints/v1-5-pruned-emaonly-fp16.safetensors", "models/tokenizers/clip/vocab.json", "models/tokenizers/clip/merges.txt"} {
		if _, err := os.Stat(filepath.Join(base, f)); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	var paths []string
	for _, r := range h.Requests() {
		paths = append(paths, r.URL.Path)
	}
	joined := strings.Join(paths, " ")
	for _, p := range []string{"/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors", "/openai/clip-vit-large-patch14/resolve/main/vocab.json", "/openai/clip-vit-large-patch14/resolve/main/merges.txt"} {
		if !strings.Contains(joined, p) {
			t.Errorf("no request for %s (got %s)", p, joined)
		}
	}
	code, out, errOut = runCLI(t, context.Background(), "models", "pull", "tokenizers", "--hf-endpoint", h.URL, "--base-directory", base)
	if code != exitOK || !strings.Contains(out, "CLIP vocabulary: already in") {
		t.Fatalf("tokenizers: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(base, "models/tokenizers/t5/spiece.model")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(func() []string {
		var p []string
		for _, r := range h.Requests() {
			p = append(p, r.URL.Path)
		}
		return p
	}(), " "), "/google/t5-v1_1-xxl/resolve/main/spiece.model") {
		t.Fatal("the T5 tokenizer came from elsewhere")
	}
	wf := writeText(t, filepath.Join(t.TempDir(), "wf.json"), `{
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}}}`)
	if code, out, errOut := runCLI(t, context.Background(), "validate", wf, "--base-directory", base); code != exitOK {
		t.Fatalf("validate after the pull: %s%s", out, errOut)
	}
	if code, out, _ := runCLI(t, context.Background(), "models", "pull", "--list"); code != exitOK || !strings.Contains(out, "sd15") || !strings.Contains(out, "flux-schnell-gguf") || !strings.Contains(out, "esrgan-4x") {
		t.Fatalf("--list: %s", out)
	}
}

func TestPullBar(t *testing.T) {
	var term bytes.Buffer
	b := &pullBar{w: &term, terminal: true}
	b.show(pull.Progress{Done: 500e6, Total: 2e9, Rate: 40e6, ETA: 37 * time.Second})
	b.end()
	if s := term.String(); !strings.HasPrefix(s, "\r") || !strings.Contains(s, "██████░") || !strings.Contains(s, "500.0 MB / 2.0 GB") ||
		!strings.Contains(s, "40.0 MB/s") || !strings.Contains(s, "ETA 37s") || !strings.HasSuffix(s, "\n") {
		t.Fatalf("terminal bar %q", s)
	}
	var plain bytes.Buffer
	b = &pullBar{w: &plain}
	for i := int64(1); i <= 20; i++ {
		b.show(pull.Progress{Done: i * 100e6, Total: 2e9, Rate: 50e6, ETA: time.Second})
	}
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if len(lines) < 5 || len(lines) > 11 || strings.Contains(plain.String(), "\r") || !strings.Contains(lines[0], "(5%)") {
		t.Fatalf("plain lines %q", lines)
	}
}
