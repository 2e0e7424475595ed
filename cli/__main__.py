"""`python -m loramux.cli`: the `loramux` command."""

from loramux.cli import main

if __name__ == "__main__":  # vLLM's spawned processes re-import this module: start nothing there
    main()
