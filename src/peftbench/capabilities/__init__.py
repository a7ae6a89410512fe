"""The capability matrix of `peftbench list --capabilities`: what each method of the catalog can do
with a trained adapter (merge, unmerge, several adapters, a quantized base), measured on a tiny
model. `tiny` builds that model and fits configs to it; `matrix` measures and caches.

Kept out of training/ on purpose: the run key hashes training/, and nothing here changes a run."""
