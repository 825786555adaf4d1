// Package graph owns ComfyUI's workflow formats: the API "prompt", the UI (litegraph)
// "workflow", their conversion, the PNG metadata that carries them, node schemas, validation
// with ComfyUI's error shapes, and DAG order.
//
// The verbs: Load (API JSON, UI JSON or PNG, told apart by content), ParsePrompt,
// ParseWorkflow, Convert (UI → API as ComfyUI's front end queues it), Validate (ComfyUI's
// /prompt checks and error bodies), Coerce (literal conversion for the executor), Order
// (topological order of what the outputs need), InsertPNGText and ReadPNGText (tEXt,
// zTXt and iTXt chunks), SchemasFromObjectInfo (schemas from a /object_info document).
//
// It imports nothing heavy: no tensors, no models, no node implementations.
package graph
