import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["download"]:  # before `lit_hf.cli`, which imports Lightning
        from lit_hf.download import main

        main(sys.argv[2:])
    else:
        from lit_hf.cli import main

        main()
