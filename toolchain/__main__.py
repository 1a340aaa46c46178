"""`python -m toolchain`: the `toolchain` command, for environments without its console script on PATH."""

from toolchain.cli import app

if __name__ == "__main__":
    app(prog_name="toolchain")
