package nodes

import (
	"context"
	"log/slog"

	"github.com/forgeflow/forgeflow/graph"
)

// Node is a node class as the executor sees it. Schema returns its static description
// (served as its /object_info entry); Run computes its outputs. Node families do not
// implement it by hand: they write Typed nodes, which Registry.Add turns into Nodes.
//
// Run is called with the node's inputs resolved: literals as Go values (int64, or
// uint64 for a seed above 2^63-1, float64, string, bool) and links as the upstream outputs (opaque values the executor never
// inspects). Missing optional inputs are absent from in. Run must return one value per
// schema output, in order, and must stop soon after ctx is cancelled, returning
// ctx.Err(). A Run that panics is reported as an execution error; the executor recovers.
// A Node value is shared by every prompt and must be safe for concurrent use.
type Node interface {
	Schema() *graph.Schema
	Run(ctx context.Context, env *Env, in Inputs) (Result, error)
}

// Result is what one Run produced.
type Result struct {
	// Outputs holds one value per schema output. For an output whose schema says
	// IsList, the value is a []any of items.
	Outputs []any
	// UI is the node's "output" object of the executed websocket message and of the
	// history (for instance {"images": [{"filename", "subfolder", "type"}]}); nil if none.
	UI map[string]any
}

// IsChanger is implemented by nodes whose result depends on something besides their
// inputs (a file on disk, the clock). IsChanged returns a fingerprint that is part of
// the cache key; a different fingerprint re-runs the node. ComfyUI's IS_CHANGED.
type IsChanger interface {
	IsChanged(env *Env, in Inputs) (string, error)
}

// InputValidator is implemented by nodes that check their literal inputs beyond the
// schema (for instance that an input file exists). ComfyUI's VALIDATE_INPUTS.
type InputValidator interface {
	ValidateInputs(env *Env, in Inputs) error
}

// Env is what a running node may use. The executor fills it per node run.
type Env struct {
	Logger   *slog.Logger
	PromptID string
	NodeID   string // the node's id in the prompt (ComfyUI's unique_id)
	Dirs     Dirs
	// Progress reports step progress of a long node (sampling steps). It may be nil.
	Progress func(value, max int)
	// Preview sends a preview image to clients watching this prompt. It may be nil.
	Preview func(p PreviewImage)
	// Prompt is the whole API prompt being run and ExtraPNGInfo the client's
	// extra_data.extra_pnginfo (the UI workflow), for nodes that embed them in files
	// (hidden inputs PROMPT and EXTRA_PNGINFO).
	Prompt       graph.Prompt
	ExtraPNGInfo map[string]any
	// DisableMetadata is set by --disable-metadata: saved files carry no workflow.
	DisableMetadata bool
	// MaxImagePixels bounds the images a node decodes (width × height, checked on the
	// header before decoding: internal/imagesize); 0 means imagesize.DefaultMaxPixels.
	MaxImagePixels int64
}

// Dirs are the folders a node may read or write. Every path a node builds from user
// input must stay inside one of them.
type Dirs struct {
	Output string
	Input  string
	Temp   string
}

// PreviewImage is an encoded preview frame (ComfyUI's binary websocket message type 1).
type PreviewImage struct {
	Format string // "JPEG" or "PNG"
	Data   []byte
}
