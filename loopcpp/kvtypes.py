"""The ggml tensor types a KV cache can hold, by name, with their ggml.h enum values. Kept apart
from the native bindings so that the CLI can offer them before the library is loaded."""

GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "bf16": 30}
