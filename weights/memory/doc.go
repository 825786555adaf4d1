// Package memory is the one place that knows how much memory there is and who uses it:
// RAM totals from the operating system, per-device VRAM from whichever backends report
// it, and a cache of loaded models keyed by file identity (path, size, modification
// time) that evicts the least recently used unpinned model when the RAM budget would be
// exceeded. GET /system_stats and POST /free read and act on a Manager; nothing else
// keeps its own counters.
package memory
