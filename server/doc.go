// Package server serves ComfyUI's HTTP and websocket API (the routes and JSON shapes of
// ComfyUI 0.3.64's server.py and app/user_manager.py) over the executor's engine and
// its queue, a node registry and the configured folders, plus the editor's static files.
// Prompts are validated and queued by executor.Engine.Submit; /queue and /history read
// and change the executor.Queue directly.
//
// Every route is served both at its ComfyUI path and under /api/, as ComfyUI does. File
// names from requests are resolved with os.Root, so nothing outside the configured folders
// is ever read or written.
package server
