"""Building blocks of the rankers: activations, MLP, DIN attention, GRU variants, DIEN aux loss."""
