"""``python -m exectrack.producer``: the same as the ``exectrack-producer`` command."""

from exectrack.producer.cli import main

if __name__ == "__main__":
    main()
