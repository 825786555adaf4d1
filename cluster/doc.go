// Package cluster runs forgeflow on many machines over NATS JetStream: a Queue that
// implements executor.Queue on a JetStream cluster (the same contract and
// conformance suite, executor/queuetest, as the bbolt store), the Worker that
// executes prompts from it, the event and interrupt bus that lets any serve front
// talk to the clients of any prompt, output files through the JetStream object
// store, and an embedded JetStream node (forgeflow nats).
//
// It imports executor, graph and nodes, never server or model code: cmd/forgeflow
// wires it to the server through the server's options. codex/scale-out.md is its
// design note.
package cluster
