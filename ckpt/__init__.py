"""ckpt: loading-optimized checkpoint store (issue C builds it)."""
