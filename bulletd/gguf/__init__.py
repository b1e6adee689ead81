"""bulletd.gguf: GGUF interop. `bullet export-gguf` (a child for llama.cpp, Ollama, ...) and
`bullet import-gguf` (a llama-family GGUF model for bulletd); a validating GGUF reader.
docs/INTEROP.md describes both directions and the mapping tables."""
from .reader import GGUFFile, GGUFTensor

__all__ = ["GGUFFile", "GGUFTensor"]
