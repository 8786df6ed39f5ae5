"""Text generation behind a port: llama.cpp in process (the embedded default) or the GPU worker."""
