// Package store is the durable executor.Queue: pending and running prompts and the
// history, in one bbolt file.
//
// Every write is one bbolt transaction, fsynced before it returns, so a prompt whose
// Push returned is never lost. See Open for what happens to a prompt that was running
// when the process died.
package store
