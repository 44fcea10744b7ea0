"""The benchmark suite of ptycho-jax: `python -m benchmarks` from the repository root (specs/benchmarks.md).

Not part of the installed package: the library never imports it. Modules, in the order a run uses
them: `plan` (cases, stages, byte model), `machine` (hardware, versions, memory, copy bandwidth),
`stages` (inputs and the implementations of each stage), `timing` (one stage's warm rounds),
`suite` (a whole run), `result` (the JSON format), `report` (targets, Markdown, plot), `units`,
`cli` (the command line); `scaling.py` is the separate mesh/stream scaling script.
"""
