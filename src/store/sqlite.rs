//! SQLite backend (placeholder until written).
