"""Dead letters: what the consumer cannot fold goes to the dead-letter topic, with why.

- ``letter``: a dead letter (the original record plus reason headers), fitted to a size
- ``send``: sending them: retry the transient, drop the impossible explicitly
- ``_topic``: what the broker says of the dead-letter topic (exists, ``max.message.bytes``);
  private: only ``send`` asks it
"""

__all__ = ["letter", "send"]
