"""`python -m lit_hf`: the command line (lit_hf/cli/dispatch.py)."""

from lit_hf.cli import main

if __name__ == "__main__":
    main()
