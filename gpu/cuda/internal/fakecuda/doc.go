// Package fakecuda holds the sources of a fake libcuda.so.1 (driver.cc, emu.h): the
// driver API calls gpu/cuda makes, over host memory, with the kernels compiled for the
// CPU by the host C++ compiler. Tests build it (gpu/cuda's fakecuda_test.go) to run the
// backend, its bindings and its kernels through the op table on machines without a GPU;
// it checks logic, not speed or the GPU compiler. No Go code.
package fakecuda
