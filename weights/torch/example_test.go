package torch_test

import (
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/weights/torch"
)

// ExampleUnpickle shows a hostile pickle (os.system("id")) being refused before anything
// could run.
func ExampleUnpickle() {
	evil := []byte("\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.")
	_, err := torch.Unpickle("evil.pkl", evil, nil)
	fmt.Println(errors.Is(err, torch.ErrForbidden))
	fmt.Println(err)

	// A plain dict of allowed values decodes to inert Go values.
	ok := []byte("\x80\x02}X\x0b\x00\x00\x00global_stepK\x07s.")
	v, err := torch.Unpickle("ok.pkl", ok, nil)
	step, _ := v.(*torch.Dict).Get("global_step")
	fmt.Println(step, err)
	// Output:
	// true
	// torch: invalid format: evil.pkl: offset 2: pickle: global "os.system" is not allowed (only tensor-rebuilding globals are)
	// 7 <nil>
}
