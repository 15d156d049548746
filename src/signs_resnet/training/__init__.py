"""The training recipe: its settings, the loop, augmentation, synthetic photos, several processes, evaluation."""
