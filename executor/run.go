package executor

import "context"

// execute runs job and returns its history entry; stopped reports that ctx ended
// (the worker is stopping) rather than an interrupt.
func (e *Engine) execute(ctx context.Context, job *Job) (entry *HistoryEntry, stopped bool) {
	_ = ctx
	return &HistoryEntry{Prompt: *job, Status: Status{StatusStr: StatusError}}, false
}
