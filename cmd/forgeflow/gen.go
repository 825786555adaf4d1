package main

//go:generate go run ./internal/gennodes -in ../../../shared/reference/comfyui-0.3.64-object_info.json -out comfyui_nodes.go
