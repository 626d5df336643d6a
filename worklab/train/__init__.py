"""Training and testing steps: the Trainer, the Tester and the statistics they report."""
