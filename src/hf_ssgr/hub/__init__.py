"""Hub: pruning metadata, model and dataset cards, saving and uploading."""
