"""Coverage-guided fuzzing of everything a stranger can send bulletd or make it load:
`python -m bulletd.fuzz` (docs/SECURITY.md, "Fuzzing"). The targets are in bulletd.fuzz.targets."""
from bulletd.fuzz.targets import TARGETS, Target

__all__ = ["TARGETS", "Target"]
