package weights

import (
	"fmt"
	"strings"
)

// FormatError reports a file that is not valid in its format: truncated, corrupt or
// inconsistent (png's FormatError). Offset is the absolute byte offset in the file where
// the problem was found, or -1 when no single offset applies.
type FormatError struct {
	Format string // "safetensors", "gguf", "torch"
	File   string // path or name given to Open; may be empty for in-memory parsing
	Tensor string // tensor (or metadata key) concerned; may be empty
	Offset int64
	Msg    string
	Err    error // optional cause or sentinel, for errors.Is; Msg already describes it
}

func (e *FormatError) Error() string {
	return e.Format + ": invalid format: " + where(e.File, e.Tensor, e.Offset) + e.Msg
}

func (e *FormatError) Unwrap() error { return e.Err }

// UnsupportedError reports a valid file that uses a feature this package does not
// implement, such as an unknown quantization type (png's UnsupportedError).
type UnsupportedError struct {
	Format string
	File   string
	Tensor string
	Offset int64
	Msg    string
}

func (e *UnsupportedError) Error() string {
	return e.Format + ": unsupported feature: " + where(e.File, e.Tensor, e.Offset) + e.Msg
}

// where renders the location part "file: tensor "x": offset 12: " of an error.
func where(file, tensor string, off int64) string {
	var b strings.Builder
	if file != "" {
		b.WriteString(file)
		b.WriteString(": ")
	}
	if tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", tensor)
	}
	if off >= 0 {
		fmt.Fprintf(&b, "offset %d: ", off)
	}
	return b.String()
}
