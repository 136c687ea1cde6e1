"""Opening trained networks and measuring them: held-out data, activations, probes, weight and
representation change, layer reset, steering and behaviour. Computes only: no figures, no CLI."""
