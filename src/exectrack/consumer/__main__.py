"""``python -m exectrack.consumer``: the same as the ``exectrack-consumer`` command."""

from exectrack._extras import consumer_main

if __name__ == "__main__":
    consumer_main()
