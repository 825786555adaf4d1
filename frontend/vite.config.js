import { defineConfig } from 'vite';

// The bundle goes to build/dist, which embed.go embeds (build/placeholder holds the
// page served when the editor was never built). Relative asset URLs keep the editor
// working under any path prefix.
export default defineConfig({
  base: './',
  build: { outDir: 'build/dist', emptyOutDir: true, chunkSizeWarningLimit: 1500 },
  server: { proxy: { '/api': { target: 'http://127.0.0.1:8188', ws: true } } },
});
