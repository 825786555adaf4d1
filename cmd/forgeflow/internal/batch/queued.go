package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/forgeflow/forgeflow/executor"
)

// RunQueued is run --queue: it validates every file and submits it to eng's queue (a
// cluster's), where workers run them in parallel, then follows each prompt to its end
// through eng's events (the caller relays the cluster's events into eng) and the
// queue's history, printing a line when a workflow is queued, for each node it runs
// and when it ends, then the same summary as Run. An invalid file stops the
// submissions after it unless opts.ContinueOnError. When ctx is cancelled the
// prompts still queued are deleted and the running ones interrupted (interrupt may
// be nil). It returns ErrFailed when a workflow did not succeed.
func RunQueued(ctx context.Context, eng *executor.Engine, e Env, files []string, opts RunOptions, interrupt func(promptID string), stdout, stderr io.Writer) error {
	q := eng.Queue()
	if q == nil {
		return errors.New("batch: run: the engine has no queue")
	}
	progressOut := stdout
	if opts.JSON {
		progressOut = stderr
	}
	bar := newProgress(progressOut, false, len(files))
	sub := eng.Subscribe()
	defer func() { sub.Close() }()

	results := make([]runResult, len(files))
	started := make([]time.Time, len(files))
	classes := make([]map[string]string, len(files))
	byID := map[string]int{}
	stop := false
	for i, f := range files {
		results[i] = runResult{path: f, status: "skipped"}
		if stop || ctx.Err() != nil {
			continue
		}
		started[i] = time.Now()
		p, err := prepare(f, e)
		var job *executor.Job
		if err == nil {
			job = &executor.Job{ID: executor.NewPromptID(), Prompt: p.prompt, ExtraData: map[string]any{}, Outputs: p.outputs}
			if p.workflow != nil {
				job.ExtraData["extra_pnginfo"] = map[string]any{"workflow": p.workflow}
			}
			_, err = eng.Submit(ctx, job, executor.PushOptions{})
		}
		if err != nil {
			results[i].status, results[i].detail, results[i].elapsed = "invalid", rejectionText(err), time.Since(started[i])
			bar.line(fmt.Sprintf("[%d/%d] %s: invalid: %s", i+1, len(files), f, results[i].detail))
			stop = !opts.ContinueOnError
			continue
		}
		results[i].nodes = len(p.prompt)
		results[i].status = "queued"
		classes[i] = map[string]string{}
		for id, n := range p.prompt {
			classes[i][id] = n.ClassType
		}
		byID[job.ID] = i
		bar.line(fmt.Sprintf("[%d/%d] %s: queued as %s", i+1, len(files), f, job.ID))
	}

	finish := func(id string) bool {
		i := byID[id]
		h, err := q.GetHistory(context.WithoutCancel(ctx), id)
		if err != nil {
			return false
		}
		r := &results[i]
		r.elapsed = time.Since(started[i])
		r.status, r.detail = outcome(h)
		r.images = nil
		for _, out := range h.Outputs {
			r.images = append(r.images, imagesOf(out)...)
		}
		delete(byID, id)
		line := fmt.Sprintf("[%d/%d] %s: %s in %s", i+1, len(files), r.path, r.status, r.elapsed.Round(time.Millisecond))
		if r.detail != "" {
			line += ": " + r.detail
		}
		bar.line(line)
		return true
	}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for len(byID) > 0 {
		select {
		case <-ctx.Done():
			ids := make([]string, 0, len(byID))
			for id := range byID {
				ids = append(ids, id)
			}
			_, _ = q.Delete(context.WithoutCancel(ctx), ids...)
			for _, id := range ids {
				if interrupt != nil {
					interrupt(id)
				}
				i := byID[id]
				results[i].status, results[i].detail, results[i].elapsed = "interrupted", "interrupted", time.Since(started[i])
			}
			byID = nil
		case <-poll.C:
			for id := range byID {
				finish(id)
			}
		case ev, ok := <-sub.C:
			if !ok {
				sub = eng.Subscribe() // fell behind: the history poll covers what was missed
				continue
			}
			d, isExec := ev.Data.(executor.ExecutingData)
			if !isExec {
				continue
			}
			i, mine := byID[d.PromptID]
			if !mine {
				continue
			}
			if d.Node == nil {
				finish(d.PromptID)
				continue
			}
			if results[i].status == "queued" {
				results[i].status = "running"
			}
			bar.line(fmt.Sprintf("  [%d/%d] %s: %s #%s", i+1, len(files), results[i].path, classes[i][*d.Node], *d.Node))
		}
	}
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
