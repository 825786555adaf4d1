// Package frontend embeds the browser editor built from this folder (npm run build
// writes build/dist) so that the one forgeflow binary serves it.
package frontend
