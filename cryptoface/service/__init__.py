"""The HTTP service and its key holder's client (an optional extra: ``pip install 'cryptoface[service]'``).

* :mod:`.server`: ``cryptoface serve``, the encrypted :class:`~cryptoface.encrypted.Server` behind FastAPI,
  with its keys and SQLite template store in one state folder.
* :mod:`.client`: the key holder's folder (:class:`~.client.KeyHome`, the secret key at mode 0600) and
  :class:`~.client.ServiceClient` over httpx.
* :mod:`.cli`: the ``cryptoface`` command.
* the bodies are bundles of :mod:`cryptoface.encrypted.wire`.

Importing this package needs neither FastAPI nor httpx; the parts that use them say so when absent.
"""
