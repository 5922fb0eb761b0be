"""The model-update jobs: the incremental trainer of the top network and the full refresh.

``train/`` reads labelled samples through ``stream``'s decoders and uses ``models/``; nothing
in ``models/``, ``stream/`` or ``features/`` imports it. Entry points: ``recstream train``
(a first model from a source), ``recstream train incremental`` and ``recstream train full``.
"""
