"""python -m tunesvc: the same as the tunesvc command."""

from .cli import main

main(prog_name="tunesvc")
