package folders

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGGUFFolders checks unet_gguf and clip_gguf as ComfyUI-GGUF registers them: the
// .gguf files of the diffusion_models and text_encoders directories, the same
// directory list (one added to either side later is searched by both), and an
// extra_model_paths.yaml key of their name ignored with a warning.
func TestGGUFFolders(t *testing.T) {
	base := t.TempDir()
	extra := t.TempDir()
	touch(t, base,
		"models/unet/flux-Q4_K_S.gguf",
		"models/unet/flux.safetensors",
		"models/diffusion_models/sub/sd3-Q8_0.GGUF",
		"models/text_encoders/t5-Q5_K_M.gguf",
		"models/clip/clip_l.safetensors",
		"models/clip/t5-Q5_K_M.gguf", // same name in both directories: listed once
		"models/unet_gguf/not-searched.gguf",
	)
	touch(t, extra, "ggufdir/ignored.gguf", "shared_unets/late.gguf")
	cfg := filepath.Join(extra, "extra_model_paths.yaml")
	yml := "other:\n    base_path: " + extra + "\n    unet_gguf: ggufdir\n    my_folder: mine\n"
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	p, err := New(Options{BaseDir: base, ExtraConfigs: []string{cfg},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "unet_gguf") || !strings.Contains(logs.String(), filepath.Join(extra, "ggufdir")) {
		t.Errorf("no warning naming the ignored unet_gguf directory; log:\n%s", logs.String())
	}
	// The YAML made unet_gguf before ComfyUI-GGUF replaced it: it keeps that place.
	order := p.Folders()
	if got := order[len(order)-3:]; !slices.Equal(got, []string{"unet_gguf", "my_folder", "clip_gguf"}) {
		t.Errorf("last folders = %q, want unet_gguf, my_folder, clip_gguf", got)
	}

	list := func(folder string) []string {
		t.Helper()
		got, err := p.List(folder)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	dirs := func(folder string) []string {
		t.Helper()
		got, err := p.Dirs(folder)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	cases := []struct {
		folder, shares string
		want           []string
	}{
		{"unet_gguf", "diffusion_models", []string{"flux-Q4_K_S.gguf", "sub/sd3-Q8_0.GGUF"}},
		{"clip_gguf", "text_encoders", []string{"t5-Q5_K_M.gguf"}},
	}
	for _, tc := range cases {
		t.Run(tc.folder, func(t *testing.T) {
			if got := list(tc.folder); !slices.Equal(got, tc.want) {
				t.Errorf("List(%s) = %q, want %q", tc.folder, got, tc.want)
			}
			if got, want := dirs(tc.folder), dirs(tc.shares); !slices.Equal(got, want) {
				t.Errorf("Dirs(%s) = %q, want %s's %q", tc.folder, got, tc.shares, want)
			}
			for _, bad := range []string{"../unet_gguf/not-searched.gguf", "/etc/passwd", "a/../../x.gguf", "x.gguf\x00", `..\x.gguf`, "%2e%2e/x.gguf"} {
				_, err := p.Resolve(tc.folder, bad)
				if err == nil {
					t.Errorf("Resolve(%s, %q) succeeded", tc.folder, bad)
				}
			}
		})
	}
	got, err := p.Resolve("unet_gguf", "sub/sd3-Q8_0.GGUF")
	if want := filepath.Join(base, "models/diffusion_models/sub/sd3-Q8_0.GGUF"); err != nil || got != want {
		t.Errorf("Resolve(unet_gguf) = %q, %v; want %q", got, err, want)
	}
	if _, err := p.Resolve("unet_gguf", "ignored.gguf"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a file under the ignored YAML directory resolved: %v", err)
	}

	// A directory added to diffusion_models after start is searched by unet_gguf, and
	// one added to unet_gguf goes to diffusion_models (one shared list).
	p.AddDir("unet", filepath.Join(extra, "shared_unets"), false)
	if got := list("unet_gguf"); !slices.Contains(got, "late.gguf") {
		t.Errorf("unet_gguf after AddDir(unet) = %q, want late.gguf in it", got)
	}
	p.AddDir("clip_gguf", filepath.Join(extra, "ggufdir"), true)
	if got := dirs("text_encoders"); got[0] != filepath.Join(extra, "ggufdir") {
		t.Errorf("AddDir(clip_gguf) did not reach text_encoders: %q", got)
	}
	if got := list("clip_gguf"); !slices.Equal(got, []string{"ignored.gguf", "t5-Q5_K_M.gguf"}) {
		t.Errorf("clip_gguf after AddDir = %q", got)
	}
}
