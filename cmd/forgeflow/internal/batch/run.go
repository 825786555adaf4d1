package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/forgeflow/forgeflow/executor"
)

// runResult is one row of the summary table.
type runResult struct {
	path    string
	status  string // ok, failed, invalid, interrupted, skipped
	nodes   int
	images  []string
	elapsed time.Duration
	detail  string
}

// RunOptions are run's own flags.
type RunOptions struct {
	// ContinueOnError runs the remaining workflows after one fails.
	ContinueOnError bool
	// Plain prints progress as plain lines even on a terminal.
	Plain bool
	// JSON prints the summary as JSON on stdout; progress then goes to stderr.
	JSON bool
}

// Run validates and executes each file on eng, one at a time outside any queue
// (Engine.Execute), drawing progress from the engine's events, and prints the summary.
// The first failure skips the rest unless opts.ContinueOnError; an interrupt (ctx
// cancelled) always does. It returns ErrFailed when a workflow did not succeed.
func Run(ctx context.Context, eng *executor.Engine, e Env, files []string, opts RunOptions, stdout, stderr io.Writer) error {
	progressOut := stdout
	if opts.JSON {
		progressOut = stderr
	}
	bar := newProgress(progressOut, isTerminal(progressOut) && !opts.Plain, len(files))
	results := make([]runResult, 0, len(files))
	stop := false
	for i, f := range files {
		if stop {
			results = append(results, runResult{path: f, status: "skipped"})
			continue
		}
		r := runOne(ctx, eng, e, f, i, bar)
		results = append(results, r)
		if r.status == "interrupted" || (r.status != "ok" && !opts.ContinueOnError) {
			stop = true
		}
	}
	bar.finish()
	if opts.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(jsonSummary(results, e.Dirs.Output)); err != nil {
			return err
		}
	} else {
		printSummary(stdout, results, e.Dirs.Output)
	}
	for _, r := range results {
		if r.status != "ok" {
			return ErrFailed
		}
	}
	return nil
}

// runOne prepares and executes one workflow, feeding bar from the engine's events.
func runOne(ctx context.Context, eng *executor.Engine, e Env, path string, idx int, bar *progress) runResult {
	start := time.Now()
	res := runResult{path: path}
	p, err := prepare(path, e)
	if err != nil {
		res.status, res.detail, res.elapsed = "invalid", rejectionText(err), time.Since(start)
		bar.line(fmt.Sprintf("[%d/%d] %s: invalid: %s", idx+1, bar.total, path, res.detail))
		return res
	}
	res.nodes = len(p.prompt)
	job := &executor.Job{ID: executor.NewPromptID(), Prompt: p.prompt, ExtraData: map[string]any{}, Outputs: p.outputs}
	if p.workflow != nil {
		job.ExtraData["extra_pnginfo"] = map[string]any{"workflow": p.workflow}
	}
	sub := eng.Subscribe()
	defer sub.Close()
	bar.start(idx, path, p.prompt)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range sub.C {
			if !bar.event(job.ID, ev) {
				return
			}
		}
	}()
	entry := eng.Execute(ctx, job)
	// The engine publishes the prompt's last event before Execute returns; wait for the
	// watcher to draw it so that lines keep their order.
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	res.elapsed = time.Since(start)
	res.status, res.detail = outcome(entry)
	for _, out := range entry.Outputs {
		res.images = append(res.images, imagesOf(out)...)
	}
	bar.done(res)
	return res
}

// outcome reads a history entry's status: ok, failed (with the node's error) or
// interrupted.
func outcome(entry *executor.HistoryEntry) (string, string) {
	for _, m := range entry.Status.Messages {
		switch m.Event {
		case executor.EventExecutionInterrupted:
			return "interrupted", "interrupted"
		case executor.EventExecutionError:
			var d executor.ExecutionErrorData
			if b, err := json.Marshal(m.Data); err == nil {
				json.Unmarshal(b, &d)
			}
			return "failed", fmt.Sprintf("node %s (%s): %s", d.NodeID, d.NodeType, d.ExceptionMessage)
		}
	}
	if entry.Status.StatusStr == executor.StatusSuccess {
		return "ok", ""
	}
	return "failed", entry.Status.StatusStr
}

// imagesOf lists the saved files of a node's UI output ({"images": [{filename,
// subfolder, type}]}), as paths relative to their folder.
func imagesOf(ui map[string]any) []string {
	var out []string
	list, _ := ui["images"].([]any)
	if list == nil {
		if l, ok := ui["images"].([]map[string]any); ok {
			for _, m := range l {
				list = append(list, m)
			}
		}
	}
	for _, it := range list {
		var f struct {
			Filename  string `json:"filename"`
			Subfolder string `json:"subfolder"`
			Type      string `json:"type"`
		}
		b, err := json.Marshal(it)
		if err != nil || json.Unmarshal(b, &f) != nil || f.Type != "output" {
			continue
		}
		out = append(out, filepath.ToSlash(filepath.Join(f.Subfolder, f.Filename)))
	}
	return out
}

// RunReport is one workflow of `run --json`.
type RunReport struct {
	Path    string   `json:"path"`
	Status  string   `json:"status"`
	Nodes   int      `json:"nodes"`
	Images  []string `json:"images"`
	Seconds float64  `json:"seconds"`
	Detail  string   `json:"detail,omitempty"`
}

func jsonSummary(results []runResult, outputDir string) map[string]any {
	reps := make([]RunReport, 0, len(results))
	for _, r := range results {
		imgs := r.images
		if imgs == nil {
			imgs = []string{}
		}
		reps = append(reps, RunReport{Path: r.path, Status: r.status, Nodes: r.nodes, Images: imgs, Seconds: r.elapsed.Seconds(), Detail: r.detail})
	}
	return map[string]any{"output_directory": outputDir, "workflows": reps}
}

func printSummary(w io.Writer, results []runResult, outputDir string) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW\tSTATUS\tNODES\tIMAGES\tTIME\tDETAIL")
	ok := 0
	for _, r := range results {
		if r.status == "ok" {
			ok++
		}
		detail := r.detail
		if detail == "" && len(r.images) > 0 {
			detail = strings.Join(r.images, ", ")
		}
		t := "-"
		if r.status != "skipped" {
			t = r.elapsed.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.path, r.status, r.nodes, len(r.images), t, detail)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d of %d workflows succeeded; outputs in %s\n", ok, len(results), outputDir)
}

// isTerminal reports whether w is a character device (a terminal), where progress is
// drawn as bars rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
