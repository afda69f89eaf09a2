"""Files in and out: embedding sets (.jsonl/.npz), image sources (folders, archives read in place),
image decoding, atomic writes and checkpoints. The bottom layer: it imports no other part."""
