package gpu

// Backend is a device that stores tensors and runs ops: the cpu backend in this package,
// and later cuda. The contract, for implementers:
//
//   - Alloc returns storage of n bytes (contents unspecified), aligned to at least 8 bytes; Free
//     gives it back. The Runtime pools buffers above this, so Alloc may be slow.
//   - Upload/Download copy bytes between host memory and a buffer (at a byte offset); they
//     may be asynchronous until Synchronize returns.
//   - Supports reports whether Run can execute op with these operand dtypes (inputs
//     first, then the output). The Runtime asks before each call and falls back to the cpu
//     backend, logging once, when the answer is no and the data is host-visible.
//   - Run executes op on c. Inputs and output live in this backend's buffers; the output
//     is preallocated with its final shape and dtype; inputs may be non-contiguous only
//     where the op's function says so. Run must not keep references to c after it returns.
//
// A Backend is used from one goroutine at a time per Runtime call, but several Runtimes
// may share one Backend, so implementations must be safe for concurrent use.
type Backend interface {
	Name() string
	Alloc(n int) (*Buffer, error)
	Free(b *Buffer)
	Upload(dst *Buffer, off int, src []byte) error
	Download(dst []byte, src *Buffer, off int) error
	Synchronize() error
	Supports(op Op, dtypes ...DType) bool
	Run(op Op, c *Call) error
}
