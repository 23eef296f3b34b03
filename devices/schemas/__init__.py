"""JSON Schema files of the device protocol payloads, generated from :mod:`devices.protocol`.

Regenerate them with ``python -m devices.schemas.generate`` after changing a payload type;
``tests/devices/test_schemas.py`` fails while the shipped files differ from the types.
"""
