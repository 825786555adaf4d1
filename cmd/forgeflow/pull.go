package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/pull"
)

// envHFEndpoint names a Hugging Face mirror, as huggingface_hub's HF_ENDPOINT does.
const envHFEndpoint = "HF_ENDPOINT"

const pullUsage = `usage: forgeflow models pull SOURCE... [--folder checkpoints] [--sha256 HEX] [--name FILE]
       forgeflow models pull tokenizers
       forgeflow models pull --list

SOURCE is an https URL, hf:owner/repo[@revision]/path/to/file, or the name of a
starter model (--list shows them). Downloads resume where they stopped (run the same
command again) and are checked against their SHA-256 when it is known.
`

// pullOptions are the flags of models pull.
type pullOptions struct {
	folder, sha, name, hfEndpoint string
	allowPickle, list, plain      bool
}

// cmdModelsPull downloads model files into the model folders.
func cmdModelsPull(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	var po pullOptions
	fl := flag.NewFlagSet("models pull", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	fl.Usage = func() { fmt.Fprint(stderr, pullUsage); printFlags(fl) }
	fl.StringVar(&po.folder, "folder", "", "model folder to save into (default checkpoints; a starter's files go to their own folders)")
	fl.StringVar(&po.sha, "sha256", "", "expected SHA-256 of the file (hex)")
	fl.StringVar(&po.name, "name", "", "file name to save as (default: from the URL or the server)")
	fl.BoolVar(&po.allowPickle, "allow-pickle", false, "allow pickle-based files (.ckpt .pt .pth .bin .pkl), which can carry code")
	fl.BoolVar(&po.list, "list", false, "list the starter models")
	fl.BoolVar(&po.plain, "plain", false, "print progress as plain lines even on a terminal")
	fl.StringVar(&po.hfEndpoint, "hf-endpoint", os.Getenv(envHFEndpoint), "Hugging Face mirror for hf: sources (default https://huggingface.co, or "+envHFEndpoint+")")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if po.list {
		if fl.NArg() > 0 {
			fmt.Fprintln(stderr, "forgeflow models pull: --list takes no SOURCE")
			return exitUsage
		}
		printStarters(stdout)
		return exitOK
	}
	if fl.NArg() == 0 {
		fl.Usage()
		return exitUsage
	}
	if (po.sha != "" || po.name != "") && fl.NArg() > 1 {
		fmt.Fprintln(stderr, "forgeflow models pull: --sha256 and --name apply to one SOURCE")
		return exitUsage
	}
	e, err := cfg.env(nil)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow models pull:", err)
		return exitFailed
	}
	p := &puller{ctx: ctx, models: e.models, po: po, out: stdout, errOut: stderr,
		terminal: isTerminalWriter(stdout) && !po.plain}
	failed := false
	for _, arg := range fl.Args() {
		if err := p.pullArg(arg); err != nil {
			// weights/pull's errors start with its package name, which the command's
			// own prefix already says.
			fmt.Fprintln(stderr, "forgeflow models pull:", strings.TrimPrefix(err.Error(), "pull: "))
			failed = true
			if ctx.Err() != nil {
				break
			}
		}
	}
	if failed {
		return exitFailed
	}
	return exitOK
}

// puller runs the downloads of one models pull.
type puller struct {
	ctx         context.Context
	models      *folders.Paths
	po          pullOptions
	out, errOut io.Writer
	terminal    bool
}

func (p *puller) pullArg(arg string) error {
	if arg == "tokenizers" {
		return p.tokenizers([]string{"clip", "t5"})
	}
	if st, ok := pull.FindStarter(arg); ok {
		return p.starter(st)
	}
	src, err := pull.ParseSource(arg, p.po.hfEndpoint)
	if err != nil {
		if !strings.Contains(arg, ":") {
			return fmt.Errorf("%q is neither a URL, an hf: source nor a starter model (forgeflow models pull --list)", arg)
		}
		return err
	}
	if p.po.name != "" {
		src.Name = p.po.name
	}
	src.SHA256 = p.po.sha
	folder := p.po.folder
	if folder == "" {
		folder = "checkpoints"
	}
	dir, err := p.folderDir(folder)
	if err != nil {
		return err
	}
	_, err = p.fetch(src, dir, 0)
	return err
}

// folderDir is where a folder's downloads go: its first directory.
func (p *puller) folderDir(folder string) (string, error) {
	if folder == "custom_nodes" || !p.models.Has(folder) {
		return "", fmt.Errorf("unknown model folder %q (known: %s)", folder, strings.Join(modelFolders(p.models), ", "))
	}
	dirs, err := p.models.Dirs(folder)
	if err != nil || len(dirs) == 0 {
		return "", fmt.Errorf("model folder %q has no directory", folder)
	}
	return dirs[0], nil
}

// modelFolders lists the folders a download may go to.
func modelFolders(m *folders.Paths) []string {
	var out []string
	for _, f := range m.Folders() {
		if f != "custom_nodes" {
			out = append(out, f)
		}
	}
	return out
}

func (p *puller) starter(st pull.Starter) error {
	fmt.Fprintf(p.out, "%s: %s, %d file(s), about %s\n", st.Name, st.Description, len(st.Files), humanBytes(st.Size()))
	for _, f := range st.Files {
		src, err := pull.ParseSource(f.Source, p.po.hfEndpoint)
		if err != nil {
			return err
		}
		dir, err := p.folderDir(f.Folder)
		if err != nil {
			return err
		}
		if _, err := p.fetch(src, dir, f.Size); err != nil {
			return err
		}
	}
	return p.tokenizers(st.Tokenizers)
}

// tokenizers fetches the named tokenizers that cannot be found yet into the first
// directory each is looked for in (models/tokenizers/clip, models/tokenizers/t5).
func (p *puller) tokenizers(names []string) error {
	for _, name := range names {
		var dir string
		switch name {
		case "clip":
			if found, err := sd.FindVocab(p.models); err == nil {
				fmt.Fprintf(p.out, "CLIP vocabulary: already in %s\n", found)
				continue
			}
			dir = sd.VocabDirs(p.models)[0]
		case "t5":
			if found, err := sd.FindT5Tokenizer(p.models); err == nil {
				fmt.Fprintf(p.out, "T5 tokenizer: already at %s\n", found)
				continue
			}
			dir = sd.T5TokenizerDirs(p.models)[0]
		default:
			return fmt.Errorf("unknown tokenizer %q", name)
		}
		for _, s := range pull.Tokenizers[name] {
			src, err := pull.ParseSource(s, p.po.hfEndpoint)
			if err != nil {
				return err
			}
			if _, err := p.fetch(src, dir, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// fetch downloads one file with a progress display and says where it went.
func (p *puller) fetch(src pull.Source, dir string, approx int64) (*pull.Result, error) {
	label := src.Name
	if label == "" {
		label = src.URL
	}
	if approx > 0 {
		fmt.Fprintf(p.out, "pulling %s (about %s) into %s\n", label, humanBytes(approx), dir)
	} else {
		fmt.Fprintf(p.out, "pulling %s into %s\n", label, dir)
	}
	bar := &pullBar{w: p.out, terminal: p.terminal}
	res, err := pull.Fetch(p.ctx, src, dir, pull.Options{AllowPickle: p.po.allowPickle, Progress: bar.show})
	bar.end()
	if err != nil {
		return nil, err
	}
	switch {
	case res.Existed && res.Checked:
		fmt.Fprintf(p.out, "%s: already there (SHA-256 checked)\n", res.Path)
	case res.Existed:
		fmt.Fprintf(p.out, "%s: already there\n", res.Path)
	case res.Checked:
		fmt.Fprintf(p.out, "saved %s (%s, SHA-256 %s verified)\n", res.Path, humanBytes(res.Size), res.SHA256)
	default:
		fmt.Fprintf(p.out, "saved %s (%s, SHA-256 %s; the source publishes none to check against)\n", res.Path, humanBytes(res.Size), res.SHA256)
	}
	return res, nil
}

func printStarters(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tWHAT")
	for _, s := range pull.Starters {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, humanBytes(s.Size()), s.Description)
		for _, f := range s.Files {
			fmt.Fprintf(tw, "\t\t  %s → %s (%s)\n", f.Source, f.Folder, humanBytes(f.Size))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nforgeflow models pull NAME fetches a starter (and the tokenizers it needs); sizes are approximate.")
}

// isTerminalWriter reports whether w is a character device.
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// pullBar draws a download's progress: one line rewritten in place on a terminal
// (bytes, bar, rate, time left), else a plain line every tenth of the file or 15
// seconds.
type pullBar struct {
	w        io.Writer
	terminal bool
	drawn    bool
	lastLine time.Time
	lastFrac float64
}

func (b *pullBar) show(p pull.Progress) {
	if p.Final {
		return
	}
	frac := -1.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	of := ""
	if p.Total > 0 {
		of = " / " + humanBytes(p.Total)
	}
	eta := "?"
	if p.ETA >= 0 {
		eta = p.ETA.Round(time.Second).String()
	}
	if b.terminal {
		const cells = 24
		bar := strings.Repeat("░", cells)
		if frac >= 0 {
			n := int(frac * cells)
			bar = strings.Repeat("█", n) + strings.Repeat("░", cells-n)
		}
		fmt.Fprintf(b.w, "\r  %s %s%s  %s/s  ETA %s\x1b[K", bar, humanBytes(p.Done), of, humanBytes(int64(p.Rate)), eta)
		b.drawn = true
		return
	}
	if time.Since(b.lastLine) < 15*time.Second && (frac < 0 || frac-b.lastFrac < 0.1) {
		return
	}
	pct := ""
	if frac >= 0 {
		pct = fmt.Sprintf(" (%.0f%%)", 100*frac)
	}
	fmt.Fprintf(b.w, "  %s%s%s, %s/s, ETA %s\n", humanBytes(p.Done), of, pct, humanBytes(int64(p.Rate)), eta)
	b.lastLine, b.lastFrac = time.Now(), frac
}

func (b *pullBar) end() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

// humanBytes writes n in decimal units, as the hosting sites show sizes.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
