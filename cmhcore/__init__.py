"""The bottom layer of the suite: what every package may import without importing a layer above.

``datasets`` and ``methods`` import only ``cmhcore`` (and ``methods`` imports ``datasets``);
``benchmark`` sits on top of all three.
"""
