"""Reading a bounce: the report parsed (``parse.py``), its format's decoder (``formats/``), each
recipient classified (``reasons.py``, ``codes.py``, a provider's own codes: ``providers/``).
Pure functions: no I/O."""
