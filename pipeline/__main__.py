"""``python -m pipeline`` runs the ``specpipe`` command line."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
