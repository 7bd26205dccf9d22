"""Encoders turn decoded inputs into vectors of one embedding space."""
