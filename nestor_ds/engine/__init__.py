"""Training engine pieces: distributed start-up, optimizer groups, losses, gradient norm."""
