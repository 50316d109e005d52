"""cryptoface: encrypted face verification built on :mod:`fhe_ckks`.

``cryptoface.training`` (PyTorch) trains and exports models;
``cryptoface.encrypted`` (numpy + fhe_ckks, never torch) runs them under
encryption.  Both arrive with later milestones; see the README.
"""
