package cuda

import (
	"fmt"
	"unsafe"
)

// driver is the part of the CUDA driver API (libcuda.so.1) the backend uses, bound with
// purego. Handles (contexts, streams, events, modules, functions) are opaque C pointers
// kept as uintptr; device memory is a CUdeviceptr (uint64).
type driver struct {
	path string

	cuInit                    func(flags uint32) int32
	cuDriverGetVersion        func(v *int32) int32
	cuDeviceGetCount          func(n *int32) int32
	cuDeviceGet               func(dev *int32, ordinal int32) int32
	cuDeviceGetName           func(name unsafe.Pointer, n int32, dev int32) int32
	cuDeviceTotalMem          func(bytes *uint64, dev int32) int32
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) int32
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuMemGetInfo              func(free, total *uint64) int32
	cuMemAlloc                func(p *uint64, n uint64) int32
	cuMemFree                 func(p uint64) int32
	cuMemHostAlloc            func(p *unsafe.Pointer, n uint64, flags uint32) int32
	cuMemFreeHost             func(p unsafe.Pointer) int32
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, n uint64, stream uintptr) int32
	cuMemcpyDtoHAsync         func(dst unsafe.Pointer, src uint64, n uint64, stream uintptr) int32
	cuMemcpyDtoDAsync         func(dst, src uint64, n uint64, stream uintptr) int32
	cuMemsetD8Async           func(dst uint64, v uint8, n uint64, stream uintptr) int32
	cuStreamCreate            func(s *uintptr, flags uint32) int32
	cuStreamSynchronize       func(s uintptr) int32
	cuEventCreate             func(e *uintptr, flags uint32) int32
	cuEventRecord             func(e, s uintptr) int32
	cuEventSynchronize        func(e uintptr) int32
	cuEventElapsedTime        func(ms *float32, start, end uintptr) int32
	cuModuleLoadData          func(m *uintptr, image unsafe.Pointer) int32
	cuModuleGetFunction       func(f *uintptr, m uintptr, name string) int32
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params, extra unsafe.Pointer) int32
	cuGetErrorName            func(res int32, s *unsafe.Pointer) int32
}

// Device attributes (CUdevice_attribute).
const (
	attrMultiprocessors = 16
	attrCCMajor         = 75
	attrCCMinor         = 76
	attrPCIBus          = 33
	attrPCIDevice       = 34
)

func loadDriver(env searchEnv, dirs []string) (*driver, error) {
	h, path, err := openLibrary(env, dirs, driverNames, "libcuda.so.1 (the NVIDIA driver)")
	if err != nil {
		return nil, err
	}
	d := &driver{path: path}
	// The _v2 entry points are the 64-bit ones every driver since CUDA 3.2 exports
	// (cuda.h maps the plain names to them).
	if err := bind(h, path, map[string]any{
		"cuInit":                       &d.cuInit,
		"cuDriverGetVersion":           &d.cuDriverGetVersion,
		"cuDeviceGetCount":             &d.cuDeviceGetCount,
		"cuDeviceGet":                  &d.cuDeviceGet,
		"cuDeviceGetName":              &d.cuDeviceGetName,
		"cuDeviceTotalMem_v2":          &d.cuDeviceTotalMem,
		"cuDeviceGetAttribute":         &d.cuDeviceGetAttribute,
		"cuDevicePrimaryCtxRetain":     &d.cuDevicePrimaryCtxRetain,
		"cuDevicePrimaryCtxRelease_v2": &d.cuDevicePrimaryCtxRelease,
		"cuCtxSetCurrent":              &d.cuCtxSetCurrent,
		"cuMemGetInfo_v2":              &d.cuMemGetInfo,
		"cuMemAlloc_v2":                &d.cuMemAlloc,
		"cuMemFree_v2":                 &d.cuMemFree,
		"cuMemHostAlloc":               &d.cuMemHostAlloc,
		"cuMemFreeHost":                &d.cuMemFreeHost,
		"cuMemcpyHtoDAsync_v2":         &d.cuMemcpyHtoDAsync,
		"cuMemcpyDtoHAsync_v2":         &d.cuMemcpyDtoHAsync,
		"cuMemcpyDtoDAsync_v2":         &d.cuMemcpyDtoDAsync,
		"cuMemsetD8Async":              &d.cuMemsetD8Async,
		"cuStreamCreate":               &d.cuStreamCreate,
		"cuStreamSynchronize":          &d.cuStreamSynchronize,
		"cuEventCreate":                &d.cuEventCreate,
		"cuEventRecord":                &d.cuEventRecord,
		"cuEventSynchronize":           &d.cuEventSynchronize,
		"cuEventElapsedTime":           &d.cuEventElapsedTime,
		"cuModuleLoadData":             &d.cuModuleLoadData,
		"cuModuleGetFunction":          &d.cuModuleGetFunction,
		"cuLaunchKernel":               &d.cuLaunchKernel,
		"cuGetErrorName":               &d.cuGetErrorName,
	}); err != nil {
		return nil, err
	}
	return d, nil
}

// resultError is a failed driver call: the call and CUresult's name.
type resultError struct {
	call string
	code int32
	name string
}

func (e *resultError) Error() string {
	return fmt.Sprintf("cuda: %s: %s (%d)", e.call, e.name, e.code)
}

// check turns a CUresult into an error naming the call.
func (d *driver) check(res int32, call string) error {
	if res == 0 {
		return nil
	}
	var p unsafe.Pointer
	name := "CUDA_ERROR"
	if d.cuGetErrorName != nil && d.cuGetErrorName(res, &p) == 0 {
		name = cString(p)
	}
	return &resultError{call: call, code: res, name: name}
}
