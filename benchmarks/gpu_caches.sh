# Sourced by the GPU session scripts: the JIT caches of an earlier session, carried in .gpucache/
# (the savecache stage of gpu_session.sh makes them), restored where FlashInfer and Inductor look,
# which saves the FlashInfer JIT build and most of torch.compile.
export FLASHINFER_WORKSPACE_BASE=/tmp/fiws TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
mkdir -p /tmp/fiws /tmp/inductor
# archives over the device tool's 16 MiB per returned file come back in parts (.part-aa, -ab, ..);
# xz: a third of gzip's size for the Inductor cache, which must fit in the 64 MiB carried
for t in .gpucache/*.tgz .gpucache/*.txz; do [ -f "$t" ] && tar -xaf "$t" -C / ; done
for p in .gpucache/*.tgz.part-aa; do [ -f "$p" ] && cat "${p%aa}"* | tar -xzf - -C / ; done
for p in .gpucache/*.txz.part-aa; do [ -f "$p" ] && cat "${p%aa}"* | tar -xJf - -C / ; done
