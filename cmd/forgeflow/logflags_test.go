package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestLogFlags checks --verbose LEVEL (ComfyUI's levels on slog's) and --log-stdout
// (lines below ERROR on stdout, errors on stderr, as ComfyUI's app/logger.py).
func TestLogFlags(t *testing.T) {
	cases := []struct {
		args           string
		stdout, stderr []string // which of debug/info/warn/error lines land where
	}{
		{"", nil, []string{"info", "warn", "error"}},
		{"--verbose", nil, []string{"debug", "info", "warn", "error"}},
		{"--verbose DEBUG", nil, []string{"debug", "info", "warn", "error"}},
		{"--verbose INFO", nil, []string{"info", "warn", "error"}},
		{"--verbose WARNING", nil, []string{"warn", "error"}},
		{"--verbose ERROR", nil, []string{"error"}},
		{"--verbose CRITICAL", nil, []string{"error"}},
		{"--log-stdout", []string{"info", "warn"}, []string{"error"}},
		{"--log-stdout --verbose", []string{"debug", "info", "warn"}, []string{"error"}},
		{"--verbose WARNING --log-stdout", []string{"warn"}, []string{"error"}},
		{"--log-stdout --verbose CRITICAL", nil, []string{"error"}},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var errb bytes.Buffer
			fl, cfg, _ := serveFlags(&errb)
			if code, ok := parseFlagsOnly(fl, strings.Fields(tc.args)); !ok {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if slices.Contains(cfg.noOps, "--log-stdout") {
				t.Fatal("--log-stdout counted as a no-op")
			}
			var out, errs bytes.Buffer
			log := cfg.logger(&out, &errs).With("k", "v").WithGroup("g")
			log.Debug("debug")
			log.Info("info")
			log.Warn("warn")
			log.Error("error")
			for _, w := range []struct {
				name string
				buf  *bytes.Buffer
				want []string
			}{{"stdout", &out, tc.stdout}, {"stderr", &errs, tc.stderr}} {
				var got []string
				for _, line := range strings.Split(strings.TrimSpace(w.buf.String()), "\n") {
					if line == "" {
						continue
					}
					if !strings.Contains(line, "k=v") {
						t.Errorf("%s line lost its attributes: %s", w.name, line)
					}
					_, msg, _ := strings.Cut(line, "msg=")
					msg, _, _ = strings.Cut(msg, " ")
					got = append(got, msg)
				}
				if !slices.Equal(got, w.want) {
					t.Errorf("%s got %q, want %q", w.name, got, w.want)
				}
			}
		})
	}
}

// TestMultiUserFlag: --multi-user is a real flag of serve now, not a no-op.
func TestMultiUserFlag(t *testing.T) {
	for _, tc := range []struct {
		args string
		want bool
	}{{"", false}, {"--multi-user", true}, {"--multi-user --listen", true}, {"--port 1 --multi-user", true}} {
		var errb bytes.Buffer
		fl, cfg, so := serveFlags(&errb)
		if code, ok := parseFlagsOnly(fl, strings.Fields(tc.args)); !ok {
			t.Fatalf("%q: exit %d: %s", tc.args, code, errb.String())
		}
		if so.multiUser != tc.want || slices.Contains(cfg.noOps, "--multi-user") {
			t.Errorf("%q: multiUser %v noOps %q", tc.args, so.multiUser, cfg.noOps)
		}
	}
}
