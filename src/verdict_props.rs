//! Properties of the verdict engine (see below).
