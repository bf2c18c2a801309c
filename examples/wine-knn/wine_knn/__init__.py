"""An R-LAM project of its own: wine cultivars from a committed CSV, a log-feature step, k-nearest neighbours."""
