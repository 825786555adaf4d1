// Package nodes defines what a node is (its schema and its Run method), the registry of
// node classes, and the environment a running node may use.
//
// It is the executor's only view of nodes and stays light: it imports graph, never the
// model code. Built-in node families live in nodes/builtin.
package nodes
