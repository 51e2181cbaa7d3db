"""Looping in other llama.cpp front ends that load loopcpp's libllama (same llama.cpp, same ABI)."""
