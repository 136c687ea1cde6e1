"""Networks and the measurements made on them: the transformer, probes, CKA.

Nothing here knows about training or games; ``experiments`` wires models to ``envs``.
"""
