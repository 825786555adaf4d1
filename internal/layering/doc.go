// Package layering holds the test that enforces ARCHITECTURE.md's import rules: each
// layer imports only the layers below it (gpu/ knows nothing of diffusion, the executor
// never sees a tensor, graph/ stays light), and a leaf such as internal/dtype imports no
// package of the module.
package layering
