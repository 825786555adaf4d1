// Package graph owns ComfyUI's workflow formats: the API "prompt", the UI (litegraph)
// "workflow", their conversion, the PNG metadata that carries them, node schemas, validation
// with ComfyUI's error shapes, and DAG order.
//
// It imports nothing heavy: no tensors, no models, no node implementations.
package graph
