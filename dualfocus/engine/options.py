"""The engines' names and options, importable without torch (the CLI's choices come from here)."""

ENGINE_NAMES = ("fast", "reference")
# The fast engine's decode steps (engine.fast.FastEngine): "off" as before; "eager" fixed-shape steps;
# "graph" those captured as CUDA graphs; "auto" graph on one CUDA device, else off.
STATIC_DECODE = ("off", "eager", "graph", "auto")
