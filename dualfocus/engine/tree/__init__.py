"""The fast engine's token trees: `plan` (where each token goes; pure Python, no torch) and
`forward` (the KV buffer, the masks and the layer loop)."""
