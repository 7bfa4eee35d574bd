"""Reading a bounce: the report parsed (``parse.py``), its format's decoder (``formats/``), each
recipient classified (``reasons.py``, ``codes.py``, ``rhosts.py``). Pure functions: no I/O."""
