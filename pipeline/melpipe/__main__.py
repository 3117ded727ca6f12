"""``python -m melpipe`` runs the ``melpipe`` command line."""

from melpipe.launch import main

if __name__ == "__main__":
    main()
