// Package executor runs API prompts: it validates a prompt before it is queued
// (Validate, ComfyUI's validate_prompt with its node_errors), keeps a durable queue of
// jobs, and runs a worker that plans the nodes reaching the requested outputs, resolves
// their inputs, caches outputs by input signature, maps nodes over lists, and reports
// ComfyUI's websocket events and history.
//
// It sees nodes only through the nodes.Node interface and treats node outputs as opaque
// values; it must not import model, weights or gpu code. The queue and history are the
// Queue interface, whose comment is the contract; executor/store implements it on
// bbolt and executor/queuetest is the conformance suite every implementation runs. The
// design is in codex/executor.md.
// Upstream reference: ComfyUI 0.3.64 execution.py, comfy_execution/{graph,caching}.py.
package executor
