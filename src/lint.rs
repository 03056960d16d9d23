//! Static check before deploy (stub, filled below).
