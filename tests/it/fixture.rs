//! fixture tests.
