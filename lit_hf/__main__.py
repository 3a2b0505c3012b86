import sys


def main() -> None:
    """`python -m lit_hf` and the `lit-hf` script: `download` and the top-level `--help` start without Lightning."""
    argv = sys.argv[1:]
    if argv[:1] == ["download"]:  # before `lit_hf.cli`, which imports Lightning
        from lit_hf.download import main as download

        download(argv[1:])
        return
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        from lit_hf.cli_help import top_help

        print(top_help(), end="")
        return
    from lit_hf.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
