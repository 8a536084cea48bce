//! AEAD store (placeholder until written).
