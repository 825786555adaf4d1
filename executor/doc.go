// Package executor runs API prompts: a durable queue of jobs, a worker that plans the
// nodes reaching the requested outputs, resolves their inputs, caches outputs by input
// signature, maps nodes over lists, and reports ComfyUI's websocket events and history.
//
// It sees nodes only through the nodes.Node interface and treats node outputs as opaque
// values; it must not import model, weights or gpu code. The queue is the small Queue
// interface; executor/store implements it on bbolt. The design is in codex/executor.md.
// Upstream reference: ComfyUI 0.3.64 execution.py, comfy_execution/{graph,caching}.py.
package executor
