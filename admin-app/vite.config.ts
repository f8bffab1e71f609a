import { defineConfig } from 'vite';

// `base: './'`: one build works at the engine's /admin/ and inside the Tauri app
// (src-tauri's frontendDist = ../dist).
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    chunkSizeWarningLimit: 200,
  },
  server: { port: 5173, strictPort: true },
  clearScreen: false,
});
