// Command forgeflow is the one forgeflow binary: the ComfyUI-compatible server
// (serve), the batch runner (run), and tools for workflows (validate, convert) and
// nodes (nodes, nodes --coverage).
//
// main only connects signals and the exit status to run(ctx, args, stdout, stderr), so
// that every subcommand runs in-process in tests. What run and validate do after their
// flags is package internal/batch, which must not import the server. The design is in
// codex/cli.md.
package main
