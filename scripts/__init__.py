"""Set-up helpers outside the library (``python -m scripts.system``: the system packages check)."""
