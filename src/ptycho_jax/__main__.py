"""`python -m ptycho_jax ARGS`: the `ptycho-jax` console script (the same entry, allocator tuning included)."""

from .app.launch import run

if __name__ == "__main__":
    run()
