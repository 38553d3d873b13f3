"""Interoperability with other implementations (upstream Pointcept PTv3 checkpoints)."""
