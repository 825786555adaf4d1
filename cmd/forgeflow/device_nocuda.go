//go:build !linux || nocuda

package main

import (
	"errors"
	"log/slog"
)

// errNoCUDA is openCUDA's answer in a build without the CUDA backend.
var errNoCUDA = errors.New("cuda: this binary was built without the CUDA backend (-tags nocuda)")

func openCUDA(o deviceOptions, log *slog.Logger) (*device, error) { return nil, errNoCUDA }
