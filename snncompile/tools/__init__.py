"""The command line (``snn-compile``, ``python -m snncompile``): a leaf that nothing imports."""
