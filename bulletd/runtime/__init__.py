"""bulletd.runtime: run .bullet language models.

    from bulletd.runtime import load_model, GenerationSettings
    model = load_model("child.bullet")                  # backend "auto" | "native" | "numpy"
    gen = model.generate("Hello", GenerationSettings(max_tokens=32, temperature=0))
    for piece in gen: print(piece, end="")
    gen.finish_reason                                   # "length" | "stop" | "eos" | "cancelled"

Modules: model (load_model, Model, Session, Generation), reference (the NumPy forward pass, the
oracle), sampling (GenerationSettings, Sampler), llama2c (checkpoint import), cli (`bullet run`,
`bullet import-llama2c`, `bullet bench`), bench (the benchmark), grammar (structured output:
compile_schema, json_grammar, grammar_for_request; model.generate(..., grammar=g)).
"""
from .model import Generation, Model, Session, load_model
from .sampling import GenerationSettings, Sampler

__all__ = ["Generation", "GenerationSettings", "Model", "Sampler", "Session", "load_model"]
