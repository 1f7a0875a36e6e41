"""``python -m moonbus``: the same command line as the ``moonbus`` script."""

from moonbus.cli import main

if __name__ == "__main__":
    main()
