//! Journal tests
