package cuda

import (
	"fmt"
	"strings"
	"unsafe"
)

// nvrtcLib is NVRTC, the CUDA C compiler library: it turns the embedded kernel source into
// a CUBIN for the device found (or PTX for the driver to finish when NVRTC does not know
// the device's architecture yet).
type nvrtcLib struct {
	path  string
	major int
	minor int

	version        func(major, minor *int32) int32
	createProgram  func(prog *uintptr, src, name string, numHeaders int32, headers, includeNames unsafe.Pointer) int32
	compileProgram func(prog uintptr, numOptions int32, options unsafe.Pointer) int32
	logSize        func(prog uintptr, size *uint64) int32
	log            func(prog uintptr, buf unsafe.Pointer) int32
	ptxSize        func(prog uintptr, size *uint64) int32
	ptx            func(prog uintptr, buf unsafe.Pointer) int32
	cubinSize      func(prog uintptr, size *uint64) int32
	cubin          func(prog uintptr, buf unsafe.Pointer) int32
	destroyProgram func(prog *uintptr) int32
	errorString    func(res int32) string
}

func loadNVRTC(env searchEnv, dirs []string) (*nvrtcLib, error) {
	h, path, err := openLibrary(env, dirs, nvrtcNames, "libnvrtc (NVRTC, the CUDA runtime compiler)")
	if err != nil {
		return nil, err
	}
	n := &nvrtcLib{path: path}
	if err := bind(h, path, map[string]any{
		"nvrtcVersion":           &n.version,
		"nvrtcCreateProgram":     &n.createProgram,
		"nvrtcCompileProgram":    &n.compileProgram,
		"nvrtcGetProgramLogSize": &n.logSize,
		"nvrtcGetProgramLog":     &n.log,
		"nvrtcGetPTXSize":        &n.ptxSize,
		"nvrtcGetPTX":            &n.ptx,
		"nvrtcGetCUBINSize":      &n.cubinSize,
		"nvrtcGetCUBIN":          &n.cubin,
		"nvrtcDestroyProgram":    &n.destroyProgram,
		"nvrtcGetErrorString":    &n.errorString,
	}); err != nil {
		return nil, err
	}
	var maj, min int32
	if r := n.version(&maj, &min); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcVersion: %s", n.errorString(r))
	}
	n.major, n.minor = int(maj), int(min)
	return n, nil
}

// Version is "major.minor" of the loaded NVRTC.
func (n *nvrtcLib) Version() string { return fmt.Sprintf("%d.%d", n.major, n.minor) }

// image is compiled device code: a CUBIN for one architecture, or PTX.
type image struct {
	PTX  bool
	Data []byte
}

// compile builds src for compute capability cc (e.g. 90) into a CUBIN; when this NVRTC
// rejects the real architecture (a device newer than the compiler) it builds PTX for the
// newest virtual architecture it accepts instead, which the driver compiles at load.
func (n *nvrtcLib) compile(src, name string, cc int) (image, error) {
	img, err := n.compileArch(src, name, fmt.Sprintf("sm_%d", cc), false)
	if err == nil {
		return img, nil
	}
	for _, v := range []int{cc, 90, 89, 86, 80, 75, 70} {
		if v > cc {
			continue
		}
		if img, err2 := n.compileArch(src, name, fmt.Sprintf("compute_%d", v), true); err2 == nil {
			return img, nil
		}
	}
	return image{}, err
}

func (n *nvrtcLib) compileArch(src, name, arch string, ptx bool) (image, error) {
	var prog uintptr
	if r := n.createProgram(&prog, src, name, 0, nil, nil); r != 0 {
		return image{}, fmt.Errorf("cuda: nvrtcCreateProgram: %s", n.errorString(r))
	}
	defer n.destroyProgram(&prog)
	opts := []string{"--gpu-architecture=" + arch, "--std=c++14", "-default-device", "--fmad=true"}
	cs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts))
	for i, o := range opts {
		cs[i] = append([]byte(o), 0)
		ptrs[i] = &cs[i][0]
	}
	res := n.compileProgram(prog, int32(len(ptrs)), unsafe.Pointer(&ptrs[0]))
	if res != 0 {
		var sz uint64
		n.logSize(prog, &sz)
		msg := ""
		if sz > 1 {
			buf := make([]byte, sz)
			n.log(prog, unsafe.Pointer(&buf[0]))
			msg = strings.TrimRight(string(buf), "\x00\n")
		}
		return image{}, fmt.Errorf("cuda: nvrtc %s (%s) for %s: %s\n%s", n.Version(), name, arch, n.errorString(res), msg)
	}
	var sz uint64
	get, getSize := n.cubin, n.cubinSize
	if ptx {
		get, getSize = n.ptx, n.ptxSize
	}
	if r := getSize(prog, &sz); r != 0 || sz == 0 {
		return image{}, fmt.Errorf("cuda: nvrtc: no output for %s (%s)", arch, n.errorString(r))
	}
	buf := make([]byte, sz)
	if r := get(prog, unsafe.Pointer(&buf[0])); r != 0 {
		return image{}, fmt.Errorf("cuda: nvrtc: reading output: %s", n.errorString(r))
	}
	return image{PTX: ptx, Data: buf}, nil
}
