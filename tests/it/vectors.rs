//! Test vectors pinning format-spec/.
