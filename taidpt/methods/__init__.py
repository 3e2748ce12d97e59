"""The methods taidpt trains and evaluates, one registered class per method."""
