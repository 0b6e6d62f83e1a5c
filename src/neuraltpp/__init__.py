"""neuraltpp: neural temporal point processes (THP, RoTHP, MHP, MHP-E) with a correct likelihood."""

__version__ = "0.1.0"
