"""The LongLive inference pipeline that lltrace profiles (causal Wan DiT + streaming VAE)."""
