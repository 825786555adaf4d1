//go:build !linux || nocuda

package main

import "log/slog"

func openCUDA(o deviceOptions, log *slog.Logger) (*device, error) { return nil, errNoCUDA }
