"""Training recognition networks: data (cached faces, identity-disjoint split, augmentations), the margin
and contrastive losses, the loop (AMP, DistributedDataParallel, exact resume), per-epoch verification,
and export to fp16 and int8."""
