package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ComfyUI's usual command lines (python main.py ...), as forgeflow serve reads them.
func TestServeCommandLines(t *testing.T) {
	cases := []struct {
		args        string
		listen      string
		port        int
		cors        string
		verbose     string
		extraConfig []string
		noOps       []string
	}{
		{"", "127.0.0.1", 8188, "", "INFO", nil, nil},
		{"--listen", "0.0.0.0,::", 8188, "", "INFO", nil, nil},
		{"--listen 0.0.0.0 --port 8188", "0.0.0.0", 8188, "", "INFO", nil, nil},
		{"--listen --port 8189", "0.0.0.0,::", 8189, "", "INFO", nil, nil},
		{"--port 8189 --listen", "0.0.0.0,::", 8189, "", "INFO", nil, nil},
		{"--listen 127.2.2.2,127.3.3.3", "127.2.2.2,127.3.3.3", 8188, "", "INFO", nil, nil},
		{"--listen=::1 --port=9000", "::1", 9000, "", "INFO", nil, nil},
		{"-listen 0.0.0.0 -port 7000", "0.0.0.0", 7000, "", "INFO", nil, nil},
		{"--enable-cors-header", "127.0.0.1", 8188, "*", "INFO", nil, nil},
		{"--enable-cors-header http://a.example --listen", "0.0.0.0,::", 8188, "http://a.example", "INFO", nil, nil},
		{"--verbose", "127.0.0.1", 8188, "", "DEBUG", nil, nil},
		{"--verbose WARNING --listen", "0.0.0.0,::", 8188, "", "WARNING", nil, nil},
		{"--verbose debug", "127.0.0.1", 8188, "", "DEBUG", nil, nil},
		{"--extra-model-paths-config a.yaml b.yaml --port 1", "127.0.0.1", 1, "", "INFO", []string{"a.yaml", "b.yaml"}, nil},
		{"--extra-model-paths-config a.yaml --extra-model-paths-config b.yaml", "127.0.0.1", 8188, "", "INFO", []string{"a.yaml", "b.yaml"}, nil},
		// The Windows portable build's and common guides' lines.
		{"--windows-standalone-build --disable-auto-launch --listen 0.0.0.0", "0.0.0.0", 8188, "", "INFO", nil,
			[]string{"--windows-standalone-build", "--disable-auto-launch"}},
		{"--lowvram --preview-method auto --use-pytorch-cross-attention --port 8190", "127.0.0.1", 8190, "", "INFO", nil,
			[]string{"--preview-method", "--use-pytorch-cross-attention"}},
		{"--fast --listen", "0.0.0.0,::", 8188, "", "INFO", nil, []string{"--fast"}},
		{"--fast fp16_accumulation cublas_ops --port 1", "127.0.0.1", 1, "", "INFO", nil, []string{"--fast"}},
		{"--cpu --force-fp16 --dont-upcast-attention --front-end-version Comfy-Org/ComfyUI_frontend@latest", "127.0.0.1", 8188, "", "INFO", nil,
			[]string{"--dont-upcast-attention", "--front-end-version"}},
		{"--reserve-vram 1.5 --cache-lru 10 --listen 0.0.0.0", "0.0.0.0", 8188, "", "INFO", nil, nil},
		// Flags ComfyUI added after 0.3.64, with their value shapes: optional numbers
		// that leave a following flag alone, several numbers, repeated values.
		{"--async-offload --listen", "0.0.0.0,::", 8188, "", "INFO", nil, []string{"--async-offload"}},
		{"--async-offload 4 --cache-ram 8 32 --port 1", "127.0.0.1", 1, "", "INFO", nil, []string{"--async-offload", "--cache-ram"}},
		{"--cache-ram --enable-manager --disable-manager-ui --offline", "127.0.0.1", 8188, "", "INFO", nil,
			[]string{"--cache-ram", "--enable-manager", "--disable-manager-ui", "--offline"}},
		{"--feature-flag show_signin_button=true --feature-flag x --disable-assets --verbose DETAIL", "127.0.0.1", 8188, "", "DETAIL", nil,
			[]string{"--feature-flag", "--disable-assets"}},
		{"--directml --listen 10.0.0.1 --vram-headroom 1 --disable-dynamic-vram --use-ck-attention", "10.0.0.1", 8188, "", "INFO", nil,
			[]string{"--directml", "--vram-headroom", "--disable-dynamic-vram", "--use-ck-attention"}},
		{"--date-based-output --date-output-format %Y/%m --high-ram --fast autotune", "127.0.0.1", 8188, "", "INFO", nil,
			[]string{"--date-based-output", "--date-output-format", "--high-ram", "--fast"}},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var errb bytes.Buffer
			fl, cfg, so := serveFlags(&errb)
			if code, ok := parseFlagsOnly(fl, strings.Fields(tc.args)); !ok {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if so.listen.val != tc.listen || so.port != tc.port || so.cors.val != tc.cors || cfg.verbose.val != tc.verbose {
				t.Fatalf("listen %q port %d cors %q verbose %q", so.listen.val, so.port, so.cors.val, cfg.verbose.val)
			}
			if !slices.Equal(cfg.extraModelPaths, tc.extraConfig) {
				t.Fatalf("extra configs %q", cfg.extraModelPaths)
			}
			for _, n := range tc.noOps {
				if !slices.Contains(cfg.noOps, n) {
					t.Fatalf("no-op flags given %q, want %s among them", cfg.noOps, n)
				}
			}
		})
	}
}

func TestServeCommandLineErrors(t *testing.T) {
	cases := []struct{ args, want string }{
		{"--bogus", "unknown flag --bogus"},
		{"--listen 0.0.0.0 extra", `unexpected arguments ["extra"]`},
		{"--port", "flag --port needs a value"},
		{"--port eighty", "invalid value"},
		{"--verbose LOUD", `unexpected arguments ["LOUD"]`},
		{"--verbose=LOUD", "not one of"},
		{"--extra-model-paths-config --port 1", "needs at least one value"},
		{"--async-offload many", `unexpected arguments ["many"]`},
		{"--cuda-device gpu0", "not a device index"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var errb bytes.Buffer
			fl, _, _ := serveFlags(&errb)
			code, ok := parseFlagsOnly(fl, strings.Fields(tc.args))
			if ok || code != exitUsage || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("ok %v exit %d, stderr %q; want %q", ok, code, errb.String(), tc.want)
			}
		})
	}
}

// Flags go before or after the paths in every command; "--" ends the flags; a word
// that looks like a flag is one unless a file has that name.
func TestFlagsAfterPaths(t *testing.T) {
	dir := t.TempDir()
	dashFile := filepath.Join(dir, "-odd.json")
	if err := os.WriteFile(dashFile, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	newRunFlags := func(errb *bytes.Buffer) (*flag.FlagSet, *config, *bool) {
		var cfg config
		fl := flag.NewFlagSet("run", flag.ContinueOnError)
		fl.SetOutput(errb)
		cfg.register(fl)
		return fl, &cfg, fl.Bool("json", false, "")
	}
	cases := []struct {
		args  string
		paths []string
		base  string
		json  bool
		err   string
	}{
		{"wf.json --base-directory X", []string{"wf.json"}, "X", false, ""},
		{"--base-directory X wf.json", []string{"wf.json"}, "X", false, ""},
		{"a.json --json b.json --base-directory=Y c/", []string{"a.json", "b.json", "c/"}, "Y", true, ""},
		{"a.json --extra-model-paths-config e.yaml b.json", []string{"a.json", "b.json"}, "", false, ""},
		{"a.json --verbose b.json", []string{"a.json", "b.json"}, "", false, ""},
		{"a.json -- --json", []string{"a.json", "--json"}, "", false, ""},
		{"-odd.json --json", []string{"-odd.json"}, "", true, ""},
		{"- --json", []string{"-"}, "", true, ""},
		{"wf.json --base-directroy X", nil, "", false, "unknown flag --base-directroy"},
		{"wf.json --no-such-file.json", nil, "", false, "unknown flag --no-such-file.json"},
		{"wf.json --base-directory", nil, "", false, "needs a value"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var errb bytes.Buffer
			fl, cfg, asJSON := newRunFlags(&errb)
			code, ok := parseFlags(fl, strings.Fields(tc.args))
			if tc.err != "" {
				if ok || code != exitUsage || !strings.Contains(errb.String(), tc.err) {
					t.Fatalf("ok %v exit %d stderr %q, want %q", ok, code, errb.String(), tc.err)
				}
				return
			}
			if !ok {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if !slices.Equal(fl.Args(), tc.paths) || cfg.baseDir != tc.base || *asJSON != tc.json {
				t.Fatalf("paths %q base %q json %v", fl.Args(), cfg.baseDir, *asJSON)
			}
		})
	}
}

// The commands themselves: a flag after the paths works, an unknown one is named.
func TestCommandsTakeFlagsAfterPaths(t *testing.T) {
	base := t.TempDir()
	good := writeText(t, filepath.Join(t.TempDir(), "good.json"), goodPrompt)
	for _, args := range [][]string{
		{"run", good, "--base-directory", base},
		{"validate", good, "--json", "--base-directory", base},
		{"convert", filepath.Join(workflowsDir, "invert_ui.json"), "--base-directory", base},
		{"models", "loras", "--base-directory", base},
		{"nodes", "--json", "--base-directory", base},
	} {
		code, _, errOut := runCLI(t, context.Background(), args...)
		if code != exitOK {
			t.Errorf("%q: exit %d: %s", args, code, errOut)
		}
	}
	code, _, errOut := runCLI(t, context.Background(), "run", good, "--no-such-flag")
	if code != exitUsage || !strings.Contains(errOut, "unknown flag --no-such-flag") {
		t.Fatalf("unknown flag after a path: exit %d, %q", code, errOut)
	}
}

// --cuda-device takes ComfyUI's forms: an index, a comma-separated list (forgeflow
// runs on the first) or "all".
func TestCUDADeviceForms(t *testing.T) {
	for args, want := range map[string]int{"": 0, "--cuda-device 1": 1, "--cuda-device 2,3": 2, "--cuda-device all": 0, "--cuda-device=1": 1} {
		var errb bytes.Buffer
		fl, cfg, _ := serveFlags(&errb)
		if code, ok := parseFlagsOnly(fl, strings.Fields(args)); !ok {
			t.Fatalf("%q: exit %d: %s", args, code, errb.String())
		}
		o, err := cfg.device.options()
		if err != nil || o.Index != want {
			t.Fatalf("%q: index %d, %v; want %d", args, o.Index, err, want)
		}
	}
}

// --models-directory moves the model folders (not custom_nodes) as ComfyUI's does, and
// must name a directory.
func TestModelsDirectory(t *testing.T) {
	base, models := t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Join(models, "checkpoints"), filepath.Join(base, "models", "checkpoints")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeText(t, filepath.Join(models, "checkpoints", "elsewhere.safetensors"), "x")
	writeText(t, filepath.Join(base, "models", "checkpoints", "base.safetensors"), "x")
	code, out, errOut := runCLI(t, context.Background(), "models", "checkpoints", "--base-directory", base, "--models-directory", models)
	if code != exitOK || !strings.Contains(out, "elsewhere.safetensors") || strings.Contains(out, "base.safetensors") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, context.Background(), "models", "--models-directory", filepath.Join(base, "missing"))
	if code == exitOK || !strings.Contains(errOut, "--models-directory") {
		t.Fatalf("a missing models directory: exit %d, %q", code, errOut)
	}
}

// Any command line parses or fails with a usage error, without a panic, and the paths
// it yields are words of the line, in their order.
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{"--listen --port 8188", "wf.json --base-directory X", "--fast fp16_accumulation --verbose",
		"--extra-model-paths-config a b -- c", "--async-offload 2 --cache-ram 1 x", "--cuda-device all -1 --reserve-vram=-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		words := strings.Fields(line)
		var errb bytes.Buffer
		fl, _, _ := serveFlags(&errb)
		parseFlagsOnly(fl, words)

		var cfg config
		rf := flag.NewFlagSet("run", flag.ContinueOnError)
		rf.SetOutput(&errb)
		cfg.register(rf)
		code, ok := parseFlags(rf, words)
		if !ok {
			if code != exitUsage && code != exitOK {
				t.Fatalf("%q: exit %d", line, code)
			}
			return
		}
		i := 0
		for _, p := range rf.Args() {
			for i < len(words) && words[i] != p {
				i++
			}
			if i == len(words) {
				t.Fatalf("%q: path %q is not a word of the line in order (paths %q)", line, p, rf.Args())
			}
			i++
		}
	})
}
