"""fhe_ckks: a from-scratch RNS-CKKS library in Python and Numba."""
