// Package nodes defines what a node class is and how one is written: Node (a schema and
// a Run over the resolved inputs, the executor's view), Typed (a Go struct whose tagged
// fields receive its inputs, decoded and checked against the schema before its Run), the
// Registry that holds classes and the value types of their sockets, the Env a running
// node may use, and the coverage check against ComfyUI's class list.
//
// It imports graph (schemas) and the standard library only, never model code: node
// families live in nodes/builtin, which registers them all in one place.
package nodes
