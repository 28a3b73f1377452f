"""Task ground: the ``arith`` generator, the solver's step format, and answer verification."""
