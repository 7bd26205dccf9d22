"""discover (walk, classify) → decode (bytes → pixels/text, with limits) → pipeline (workers, batches)."""
